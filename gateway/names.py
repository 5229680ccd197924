"""Small rules shared by handlers and logic modules."""

import re

#: names of users, groups and targets
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
