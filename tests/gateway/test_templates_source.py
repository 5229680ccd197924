"""The template source (gateway/templates/source.py) against real git repositories made here."""

from __future__ import annotations

from pathlib import Path

import pytest
from gitrepo import commit, git, new_repo

from cellgate.gateway.templates.source import GitSource, SourceError, shown

GOOD = b"-- ---\n-- targets: [payments]\n-- parameters:\n--   n: {type: integer, default: 1}\n-- ---\nSELECT {{ n }};\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return new_repo(tmp_path / "templates")


def test_refresh_pins_commits_and_reads_each_as_it_was(repo: Path, tmp_path: Path) -> None:
    first = commit(repo, {"fixes/refund.sql": GOOD, "README.md": b"not a template\n", "broken.sql": b"SELECT 1;\n"})
    source = GitSource(str(repo), "main", tmp_path / "cache")
    assert source.refresh() == first == source.head()
    catalog = source.catalog(first)
    assert list(catalog.templates) == ["fixes/refund"] and catalog.commit == first
    assert list(catalog.errors) == ["broken.sql"] and "must open with a header" in catalog.errors["broken.sql"]
    second = commit(repo, {"fixes/refund.sql": GOOD.replace(b"default: 1", b"default: 2"), "new.py": b"# ---\n# ---\nprint(1)\n"})
    assert source.head() == first  # nothing moves until a refresh
    assert source.refresh() == second
    assert source.catalog(first).templates["fixes/refund"].params["n"].default == 1  # the old commit, as it was
    assert source.catalog(second).templates["fixes/refund"].params["n"].default == 2
    assert sorted(source.catalog(second).templates) == ["fixes/refund", "new"]


def test_a_force_push_is_followed(repo: Path, tmp_path: Path) -> None:
    commit(repo, {"a.sql": GOOD})
    source = GitSource(f"file://{repo}", "main", tmp_path / "cache")
    source.refresh()
    git(repo, "commit", "-q", "--amend", "-m", "rewritten")
    assert source.refresh() == git(repo, "rev-parse", "HEAD")


def test_another_branch_is_read_only_when_named(repo: Path, tmp_path: Path) -> None:
    main = commit(repo, {"a.sql": GOOD})
    git(repo, "checkout", "-q", "-b", "staging")
    staging = commit(repo, {"b.sql": GOOD})
    assert GitSource(str(repo), "staging", tmp_path / "s").refresh() == staging
    assert GitSource(str(repo), "main", tmp_path / "m").refresh() == main


@pytest.mark.parametrize(("repository", "branch", "said"), [
    ("ext::sh -c touch% /tmp/cg-ext-pwned", "main", "give a local path or a git URL"),
    ("--upload-pack=touch /tmp/cg-pwned", "main", "give a local path or a git URL"),
    ("/nonexistent/repo", "main", "cannot fetch branch main of /nonexistent/repo"),
    (None, "nope", "cannot fetch branch nope"),
    (None, "../../etc", "is not a branch name"),
    (None, "-delete", "is not a branch name"),
])
def test_what_cannot_be_fetched_is_a_source_error(repo: Path, tmp_path: Path, repository: str | None, branch: str,
                                                   said: str) -> None:
    commit(repo, {"a.sql": GOOD})
    with pytest.raises(SourceError, match=said.replace(".", r"\.")):
        GitSource(repository or str(repo), branch, tmp_path / "cache").refresh()
    assert not Path("/tmp/cg-ext-pwned").exists() and not Path("/tmp/cg-pwned").exists()


def test_a_commit_is_named_in_full_and_must_exist(repo: Path, tmp_path: Path) -> None:
    head = commit(repo, {"a.sql": GOOD})
    source = GitSource(str(repo), "main", tmp_path / "cache")
    with pytest.raises(SourceError, match="was not fetched yet"):
        source.head()
    source.refresh()
    for bad in (head[:12], "HEAD", "main", f"{head}:a.sql", "--all"):
        with pytest.raises(SourceError, match="is not a commit id"):
            source.catalog(bad)
    with pytest.raises(SourceError, match="git ls-tree failed"):
        source.catalog("0" * 40)


def test_a_password_in_the_url_is_never_shown(tmp_path: Path) -> None:
    url = "http://bot:s3cret-Tok@127.0.0.1:9/templates.git"  # nothing listens on port 9 here
    assert shown(url) == "http://bot:***@127.0.0.1:9/templates.git" and shown("/srv/t") == "/srv/t"
    with pytest.raises(SourceError) as info:
        GitSource(url, "main", tmp_path / "cache", timeout=20).refresh()
    assert "s3cret-Tok" not in str(info.value) and "bot:***@127.0.0.1:9" in str(info.value)


@pytest.mark.parametrize("repository", ["--upload-pack=touch /tmp/cg-pwned", "ext::sh -c id", "EXT::sh"])
def test_the_setting_refuses_what_git_would_run(repository: str) -> None:
    """At start (a one-line configuration error), not at the first fetch."""
    from traitlets import TraitError

    from cellgate.gateway.templates.config import Templates

    with pytest.raises(TraitError, match=r"Templates\.repository: .*give a local path or a git URL"):
        Templates(repository=repository)
    assert Templates(repository="/srv/templates").repository == "/srv/templates"
