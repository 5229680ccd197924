"""Templates: parameterized notebooks and scripts from a git repository, run as reviewed tasks.

``source`` reads one branch of a repository at pinned commits; ``catalog`` parses a template file
(kind, description, who may run it where, parameters); ``declare`` checks parameter declarations
and the values a run gives. See docs/templates.md.
"""
