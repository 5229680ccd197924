"""Static scan of Python cells before review: processes, network, files, environment, eval.

A cell is first put through IPython's own input transformer (what ipykernel does before it
runs a cell), so ``!cmd``, ``x = !cmd`` and ``%magic``/``%%magic`` lines become
``get_ipython().system(...)``/``run_line_magic(...)``/``run_cell_magic(...)`` calls that
the scan sees exactly where IPython would, and not inside strings. Without IPython, magic lines
are found in the raw text instead. The transformed code is parsed with :mod:`ast` and walked
once; imports are followed through aliases (``import subprocess as sp``, ``from os import
system as run``, ``__import__("os")``), so the flags name what the code reaches, not how it
spells it. Strings and comments never raise a flag.

Decisions (docs/risk.md has the table):

- ``getattr(obj, "name")`` with a literal name is read as ``obj.name`` (``getattr(os,
  "system")`` is ``subprocess``); with a computed name on an imported module it is
  ``eval_exec``.
- Importing a module that only exists to do one of these things (subprocess, socket, requests,
  ctypes…) raises its flag even before anything is called; ``import os`` or ``import pickle``
  alone do not (their harmless uses are common), their dangerous functions do.
- SQL passed to ``execute``/``executemany``/``executescript``/``read_sql``/``text`` as a literal
  is analysed like a SQL cell: reads raise nothing, anything else raises ``sql_write`` (an
  addition to the Python flags: a Python target holds database credentials too). SQL built at
  run time raises ``sql_write``; ``DataFrame.to_sql`` always does. The statement types and
  tables of that SQL are reported, so a target's deny rules apply to them.
- A cell that does not parse is ``unparseable`` (never auto-approvable); words in its text
  that would have raised flags are still reported.
"""

from __future__ import annotations

import ast
import re
import threading
import warnings
from functools import lru_cache
from typing import Any, TypeGuard

from .model import Findings, Risk
from .sql import analyze_sql

# ---------------------------------------------------------------------------- what is risky

_SUBPROCESS, _NETWORK, _FILE, _EVAL, _ENV, _DYNAMIC, _SHELL = (
    "subprocess", "network", "file_write", "eval_exec", "env_access", "dynamic_code", "shell_magic")
_RULE = {flag: f"python.{flag}" for flag in (_SUBPROCESS, _NETWORK, _FILE, _EVAL, _ENV, _DYNAMIC, _SHELL)}
_RULE["sql_write"] = "python.sql_write"
_RULE["unparseable"] = "python.unparseable"

#: modules whose import alone raises a flag, and every attribute of which does
_MODULES: dict[str, tuple[str, str]] = {
    **{m: (_SUBPROCESS, "starts processes") for m in ("subprocess", "pty", "commands", "sh", "pexpect", "plumbum")},
    **{m: (_NETWORK, "talks to the network") for m in (
        "socket", "socketserver", "urllib.request", "urllib3", "http.client", "http.server", "requests", "httpx",
        "aiohttp", "ftplib", "smtplib", "poplib", "imaplib", "nntplib", "telnetlib", "paramiko", "fabric",
        "xmlrpc.client", "xmlrpc.server", "websocket", "websockets", "pycurl", "asyncssh", "boto3", "botocore",
        "grpc", "tornado.httpclient", "urllib2", "httplib")},
    **{m: (_DYNAMIC, "loads native code") for m in ("ctypes", "_ctypes", "cffi")},
    **{m: (_EVAL, "runs code by name") for m in ("runpy", "importlib.util", "importlib.machinery")},
}

#: dotted names (a trailing * is a prefix) → (flag, what it does)
_NAMES: dict[str, tuple[str, str]] = {
    **{n: (_SUBPROCESS, "starts a process") for n in (
        "os.system", "os.popen", "os.exec*", "os.spawn*", "os.posix_spawn*", "os.fork", "os.forkpty",
        "os.startfile", "platform.popen", "asyncio.create_subprocess_exec", "asyncio.create_subprocess_shell")},
    **{n: (_SUBPROCESS, "signals another process") for n in ("os.kill", "os.killpg")},
    **{n: (_ENV, "reads or changes the environment, where the target's credentials live") for n in (
        "os.environ", "os.environb", "os.getenv", "os.getenvb", "os.putenv", "os.unsetenv", "posix.environ")},
    **{n: (_FILE, "changes files") for n in (
        "os.remove", "os.unlink", "os.rmdir", "os.removedirs", "os.rename", "os.renames", "os.replace",
        "os.makedirs", "os.mkdir", "os.chmod", "os.lchmod", "os.chown", "os.lchown", "os.truncate", "os.link",
        "os.symlink", "os.mkfifo", "os.mknod", "os.utime", "os.write", "numpy.save", "numpy.savez",
        "numpy.savez_compressed", "numpy.savetxt")},
    **{n: (_EVAL, "runs code built at run time") for n in (
        "eval", "exec", "compile", "__import__", "execfile", "importlib.import_module", "importlib.__import__",
        "importlib.reload", "code.interact", "code.InteractiveInterpreter", "code.InteractiveConsole",
        "types.FunctionType", "types.CodeType")},
    **{n: (_DYNAMIC, "loads pickled objects, which can run code") for n in (
        "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "_pickle.Unpickler",
        "cPickle.load", "cPickle.loads", "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads",
        "marshal.load", "marshal.loads", "shelve.open", "pandas.read_pickle", "joblib.load", "torch.load",
        "jsonpickle.decode", "yaml.unsafe_load", "yaml.unsafe_load_all")},
    **{n: (_NETWORK, "talks to the network") for n in (
        "asyncio.open_connection", "asyncio.start_server", "asyncio.open_unix_connection",
        "asyncio.start_unix_server")},
}
#: names that, when this cell neither imports nor assigns them, are taken to be the module of that
#: name (imported in an earlier cell: a kernel keeps its namespace between cells)
_DEFAULT_MODULES = {name: name for name in (
    "os", "subprocess", "pty", "sh", "pexpect", "plumbum", "socket", "socketserver", "urllib", "urllib3", "http",
    "requests", "httpx", "aiohttp", "ftplib", "smtplib", "poplib", "imaplib", "nntplib", "telnetlib", "paramiko",
    "xmlrpc", "websocket", "websockets", "pycurl", "asyncssh", "boto3", "botocore", "grpc", "ctypes", "cffi",
    "runpy", "importlib", "shutil", "pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib", "torch",
    "yaml", "jsonpickle", "asyncio", "platform", "posix", "io", "codecs", "gzip", "bz2", "lzma", "tarfile",
    "zipfile", "pathlib", "numpy", "pandas", "sqlalchemy")} | {"np": "numpy", "pd": "pandas", "sp": "subprocess"}
#: attributes that are dangerous on whatever a name from an earlier cell may be (`sp.check_output`)
_SUSPECT_ATTRIBUTES: dict[str, str] = {
    **{a: _SUBPROCESS for a in ("system", "popen", "Popen", "check_output", "check_call", "getoutput",
                                "getstatusoutput", "execv", "execve", "execvp", "execvpe", "execl", "execlp",
                                "spawnv", "spawnvp", "spawnl", "posix_spawn", "posix_spawnp")},
    **{a: _ENV for a in ("environ", "getenv", "putenv", "unsetenv")},
    **{a: _NETWORK for a in ("urlopen", "create_connection")},
    "rmtree": _FILE, "import_module": _EVAL,
}
_MODULE_OF_FLAG = {_SUBPROCESS: "a process being started", _ENV: "the environment being read",
                   _NETWORK: "a network connection", _FILE: "files being deleted", _EVAL: "code imported by name"}
_SHUTIL_READ = {"which", "disk_usage", "get_terminal_size", "get_archive_formats", "get_unpack_formats"}
_BUILTINS = {"eval", "exec", "compile", "__import__", "open", "execfile", "getattr"}
#: names `from M import *` brings in that the scan cares about
_STAR: dict[str, tuple[str, ...]] = {
    "os": ("system", "popen", "environ", "getenv", "putenv", "unsetenv", "remove", "unlink", "rmdir", "rename",
           "replace", "makedirs", "mkdir", "chmod", "chown", "kill", "fork", "truncate", "symlink", "link",
           "execv", "execve", "execl", "execlp", "execvp", "spawnv", "spawnl", "removedirs"),
    "shutil": ("rmtree", "copy", "copy2", "copyfile", "copytree", "move", "chown", "make_archive", "unpack_archive"),
    "pickle": ("load", "loads", "Unpickler"),
    "marshal": ("load", "loads"),
    "importlib": ("import_module", "reload"),
}

#: (module.)function → index of its mode argument; mode "r" when absent
_OPENERS = {"open": 1, "io.open": 1, "codecs.open": 1, "gzip.open": 1, "bz2.open": 1, "lzma.open": 1,
            "tarfile.open": 1, "zipfile.ZipFile": 1, "os.fdopen": 1, "io.FileIO": 1, "gzip.GzipFile": 1}
#: methods that change files whatever object they are called on
_PATH_METHODS = {"write_text", "write_bytes", "unlink", "rmdir", "touch", "symlink_to", "hardlink_to",
                 "mkdir", "chmod", "lchmod", "tofile", "savefig"}
#: methods that change files when called on a pathlib.Path (pandas has rename and replace too)
_PATH_ONLY_METHODS = {"rename", "replace"}
_PATH_CONSTRUCTORS = {"pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePath"}
#: DataFrame/Series writers: a file when given a path
_FRAME_WRITERS = {"to_csv", "to_excel", "to_parquet", "to_pickle", "to_feather", "to_hdf", "to_stata", "to_orc",
                  "to_json", "to_html", "to_latex", "to_markdown", "to_xml"}
#: calls that run SQL given as their first argument
_SQL_CALLS = {"execute", "executemany", "executescript", "exec_driver_sql", "read_sql", "read_sql_query",
              "copy_expert"}
_SQL_WRITERS = {"to_sql", "copy_from", "copy_to"}

# IPython magics: name → (flag or None for harmless, what it does). Magics whose argument or body
# is Python (%time, %%capture…) are scanned as Python; unknown magics are shell_magic.
_CODE_MAGICS = {"time", "timeit", "prun", "capture", "debug"}
_MAGICS: dict[str, tuple[str | None, str]] = {
    **{m: (_SHELL, "runs a shell command") for m in (
        "system", "sx", "sc", "!", "bash", "sh", "script", "perl", "ruby", "python", "python2", "python3",
        "pypy", "alias", "unalias", "rehashx", "pip", "conda", "mamba", "micromamba", "uv", "rm", "rmdir",
        "mkdir", "cp", "mv", "cat", "ls", "ll", "lf", "lk", "lx", "ldir", "man", "less", "more", "clear",
        "killbgscripts", "srun", "sbatch")},
    **{m: (_FILE, "writes a file") for m in ("writefile", "file", "save", "logstart", "logon", "store", "notebook")},
    **{m: (_EVAL, "runs or loads code the scan cannot see") for m in (
        "run", "load", "loadpy", "load_ext", "reload_ext", "recall", "rerun", "macro", "edit", "autoreload",
        "aimport")},
    **{m: (_ENV, "reads or changes the environment, where the target's credentials live") for m in ("env", "set_env")},
    **{m: (None, "") for m in (
        "matplotlib", "who", "whos", "who_ls", "precision", "pprint", "pinfo", "pinfo2", "pdoc", "pdef", "psource",
        "pfile", "psearch", "lsmagic", "magic", "quickref", "xmode", "colors", "autoindent", "automagic",
        "doctest_mode", "config", "page", "pwd", "tb", "html", "javascript", "js", "latex", "markdown", "svg",
        "dirs", "dhist", "bookmark", "cd", "pushd", "popd", "autocall", "autosave", "connect_info", "gui",
        "reset", "reset_selective", "xdel", "history", "hist", "pylab", "alias_magic", "code_wrap",
        "time", "timeit", "prun", "capture", "debug")},
}
#: a one-line cell that is just one of these names runs the magic (IPython's automagic)
_AUTOMAGIC = {"env", "ls", "ll", "pip", "conda", "rehashx", "killbgscripts", "store", "logstart", "notebook"}
#: get_ipython() methods that run code or commands
_IPY_METHODS = {"system": (_SHELL, "runs a shell command"), "getoutput": (_SHELL, "runs a shell command"),
                "system_raw": (_SHELL, "runs a shell command"), "system_piped": (_SHELL, "runs a shell command"),
                "run_cell": (_EVAL, "runs code built at run time"), "run_code": (_EVAL, "runs code built at run time"),
                "ex": (_EVAL, "runs code built at run time"), "ev": (_EVAL, "runs code built at run time"),
                "safe_execfile": (_EVAL, "runs a file"), "safe_run_module": (_EVAL, "runs a module"),
                "run_ast_nodes": (_EVAL, "runs code built at run time")}

# words that, in code that does not parse, hint at what it would have done
_WORDS = [
    (re.compile(r"\b(subprocess|os\.system|os\.popen|os\.exec\w*|os\.spawn\w*|pty)\b"), _SUBPROCESS),
    (re.compile(r"\b(socket|requests|httpx|aiohttp|urllib|http\.client|ftplib|smtplib|paramiko|telnetlib)\b"), _NETWORK),
    (re.compile(r"\b(eval|exec|compile|__import__|importlib)\s*\("), _EVAL),
    (re.compile(r"\b(os\.environ|getenv|putenv)\b"), _ENV),
    (re.compile(r"\b(pickle|marshal|ctypes|cffi)\b"), _DYNAMIC),
    (re.compile(r"\b(shutil|os\.remove|os\.unlink|os\.rmdir|os\.rename|write_text|write_bytes)\b"), _FILE),
]
_MAGIC_LINE = re.compile(r"^\s*(?:[\w.]+\s*=\s*)?(!{1,2}|%{1,2})\s*([\w!]*)(.*)$")


def analyze_python(code: str) -> Risk:
    """The risk of a Python cell (IPython syntax included)."""
    found = Findings()
    sql: list[Risk] = []
    source = _transform(code)
    if source is None:  # no IPython: magics from the raw lines, then the rest as plain Python
        source = _raw_magics(code, found, sql)
    if source.strip():
        _scan(source, found, sql, line_offset=0)
    flags = tuple(sorted(found.flags))
    if not found.items:
        found.add("python.clean", "no process, network, file, environment, eval or SQL-write use found")
    statements = tuple(s for r in sql for s in r.statements)
    tables = tuple(sorted({t for r in sql for t in r.tables}))
    return Risk(level=found.level(), reasons=found.reasons(), flags=flags, statements=statements, tables=tables,
                read_only=False, parsed="unparseable" not in found.flags)


# ---------------------------------------------------------------------------- IPython

@lru_cache(maxsize=1)
def _transformer() -> Any:
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except Exception:  # IPython missing or broken: fall back to the raw-line scan
        return None
    return TransformerManager()  # type: ignore[no-untyped-call]  # IPython leaves its __init__ unannotated


def _transform(code: str) -> str | None:
    manager = _transformer()
    if manager is None:
        return None
    stripped = code.strip()
    if stripped in _AUTOMAGIC:  # a one-line `env` runs %env in IPython
        code = "%" + stripped
    try:
        with _QUIET_WARNINGS, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return str(manager.transform_cell(code))
    except Exception:
        return None


def _raw_magics(code: str, found: Findings, sql: list[Risk]) -> str:
    """Without IPython: find magic lines in the raw text, blank them out, return the rest."""
    lines = code.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        match = _MAGIC_LINE.match(line)
        if not match:
            out.append(line)
            continue
        prefix, name, rest = match.groups()
        indent = line[: len(line) - len(line.lstrip())]
        if prefix.startswith("!"):
            _magic(found, sql, "system", rest, i + 1, cell=False)
        elif prefix == "%%":
            _magic(found, sql, name, "\n".join(lines[i + 1:]), i + 1, cell=True)
            out.extend([""] * (len(lines) - i))
            break
        else:
            _magic(found, sql, name, rest, i + 1, cell=False)
        out.append(indent + "pass")  # keeps an indented block (`if x:\n    !cmd`) valid
    return "\n".join(out)


def _magic(found: Findings, sql: list[Risk], name: str, arg: str, line: int, cell: bool) -> None:
    shown = ("%%" if cell else "%") + name if name != "!" else "!"
    if name in _CODE_MAGICS:  # the argument (line) or body (cell) is Python: scan it
        body = arg if cell else _strip_magic_options(arg)
        if body.strip():
            _scan(body, found, sql, line_offset=line if cell else line - 1, nested=True)
        return
    if name == "history" and re.search(r"(^|\s)-f\b", arg):
        found.add(_RULE[_FILE], f"line {line}: %history -f writes a file", _FILE)
        return
    flag, what = _MAGICS.get(name, (_SHELL, "is a magic the scan does not know: it may run anything"))
    if flag is not None:
        found.add(_RULE[flag], f"line {line}: {shown} {what}" + (f": {_snippet(arg)}" if arg.strip() else ""), flag)


def _strip_magic_options(arg: str) -> str:
    """`-n 3 -r 1 f(x)` → `f(x)` for %timeit and friends."""
    return re.sub(r"^\s*(?:-{1,2}\w+(?:[ =](?:\d+|\w+(?=\s)))?\s+)*", "", arg)


# ---------------------------------------------------------------------------- the AST scan

# Compiling a cell warns about its contents ('\d' in a string, `x is 1`): that is the user's code
# talking, not ours, and where warnings are errors (tests) it would turn into a SyntaxError. The
# warnings filter is process-wide, so the quiet window is held under a lock and kept short.
_QUIET_WARNINGS = threading.Lock()


def _parse(source: str) -> ast.Module:
    with _QUIET_WARNINGS, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(source)


def _scan(source: str, found: Findings, sql: list[Risk], line_offset: int, nested: bool = False) -> None:
    try:
        tree = _parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        line = getattr(exc, "lineno", None)
        where = f"line {line + line_offset}: " if isinstance(line, int) else ""
        message = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
        what = "the Python inside a magic does not parse" if nested else "the Python does not parse"
        found.add(_RULE["unparseable"], f"{what} ({where}{message})", "unparseable")
        for pattern, flag in _WORDS:
            words = sorted({m.group(1) for m in pattern.finditer(source)})
            if words:
                found.add(_RULE[flag], f"the code that does not parse mentions {', '.join(words)}", flag)
        return
    try:
        _Scanner(found, sql, line_offset, tree).visit(tree)
    except RecursionError:
        found.add(_RULE["unparseable"], "the Python is nested too deeply to scan", "unparseable")


def _bound_names(tree: ast.AST) -> set[str]:
    """Every name the cell itself binds: assignments, imports, definitions, parameters."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
    return bound


class _Scanner(ast.NodeVisitor):
    def __init__(self, found: Findings, sql: list[Risk], line_offset: int, tree: ast.AST) -> None:
        self.found = found
        self.sql = sql
        self.offset = line_offset
        self.bound = _bound_names(tree)
        self.aliases: dict[str, str] = {"__builtins__": "builtins", "builtins": "builtins"}
        self.strings: dict[str, str] = {}   # name → the string literal last assigned to it
        self.paths: set[str] = set()        # names last assigned a pathlib.Path
        self.shells: set[str] = set()       # names assigned get_ipython()

    # -- helpers
    def flag(self, node: ast.AST, flag: str, sentence: str) -> None:
        line = getattr(node, "lineno", 0) + self.offset
        self.found.add(_RULE[flag], f"line {line}: {sentence}", flag)

    def resolve(self, node: ast.AST) -> str | None:
        """The dotted name an expression refers to through imports (`sp.run` → `subprocess.run`)."""
        if isinstance(node, ast.Name):
            name = self.aliases.get(node.id)
            if name is None and node.id not in self.bound:
                name = node.id if node.id in _BUILTINS else _DEFAULT_MODULES.get(node.id)
            return name
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call):
            target = self.resolve(node.func)
            if target in ("__import__", "importlib.import_module") and node.args and _literal(node.args[0]):
                return _literal(node.args[0])
            if target == "getattr" and len(node.args) >= 2 and _literal(node.args[1]):
                base = self.resolve(node.args[0])
                return f"{base}.{_literal(node.args[1])}" if base else None
        return None

    def check_name(self, node: ast.AST, name: str) -> None:
        name = name.removeprefix("builtins.")
        module = _match_module(name)
        if module is not None:
            flag, what = _MODULES[module]
            self.flag(node, flag, f"{name} {what}")
            return
        rule = _match_name(name)
        if rule is not None:
            flag, what = rule
            self.flag(node, flag, f"{name} {what}")
        elif name.startswith("shutil.") and name.split(".")[1] not in _SHUTIL_READ:
            self.flag(node, _FILE, f"{name} copies, moves or deletes files")

    # -- imports
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.aliases[top] = top
            self.check_name(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:  # a relative import: the cell's own package, nothing the scan knows
            return
        module = node.module or ""
        for alias in node.names:
            if alias.name == "*":
                self.check_name(node, module)
                for name in _STAR.get(module, ()):
                    self.aliases[name] = f"{module}.{name}"
                continue
            full = f"{module}.{alias.name}"
            self.aliases[alias.asname or alias.name] = full
            self.check_name(node, full)

    # -- assignments we follow: strings (SQL) and paths
    def visit_Assign(self, node: ast.Assign) -> None:
        value = _literal(node.value)
        is_path = self.is_path(node.value)
        is_shell = isinstance(node.value, ast.Call) and _is_get_ipython(node.value)
        for target in node.targets:
            if isinstance(target, ast.Name):
                self.strings.pop(target.id, None)
                self.paths.discard(target.id)
                self.shells.discard(target.id)
                if value is not None:
                    self.strings[target.id] = value
                if is_path:
                    self.paths.add(target.id)
                if is_shell:
                    self.shells.add(target.id)
        self.generic_visit(node)

    def is_path(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Call):
            if self.resolve(node.func) in _PATH_CONSTRUCTORS:
                return True
            if isinstance(node.func, ast.Attribute):  # Path.home(), p.with_suffix(…), p.resolve()
                return self.is_path(node.func.value) or self.resolve(node.func.value) in _PATH_CONSTRUCTORS
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self.is_path(node.left)
        if isinstance(node, ast.Name):
            return node.id in self.paths
        return False

    # -- uses
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            name = self.resolve(node)
            if name and name != "builtins":
                self.check_name(node, name)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = self.resolve(node)
        if name is not None:
            self.check_name(node, name)
            self.visit_subexpressions(node.value)  # but calls inside it: __import__("os").system
            return  # the base is part of the same name: do not report it again
        base = node.value
        if (isinstance(base, ast.Name) and base.id not in self.bound and base.id not in self.aliases
                and node.attr in _SUSPECT_ATTRIBUTES):
            flag = _SUSPECT_ATTRIBUTES[node.attr]
            self.flag(node, flag, f"{base.id}.{node.attr} ({base.id} comes from an earlier cell) looks like "
                      f"{_MODULE_OF_FLAG[flag]}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = self.resolve(func)
        if name is not None:
            self.check_name(func, name)
        if name in _OPENERS:
            self.check_open(node, name, _OPENERS[name])
        elif name == "os.open":
            self.check_os_open(node)
        elif name == "getattr":
            self.check_getattr(node)
        elif name in ("yaml.load", "yaml.load_all"):
            self.check_yaml(node, name)
        elif name == "numpy.load" and _keyword_true(node, "allow_pickle"):
            self.flag(node, _DYNAMIC, "numpy.load(allow_pickle=True) loads pickled objects, which can run code")
        elif name in ("sqlalchemy.text", "sqlalchemy.sql.text", "sqlalchemy.sql.expression.text"):
            self.check_sql(node, name, node.args[0] if node.args else None)
        if isinstance(func, ast.Attribute):
            self.check_method(node, func, name)
        if self.is_ipython(func):
            self.check_ipython(node, func)
        for child in (*node.args, *node.keywords):
            self.visit(child)
        if name is None:
            self.visit(func)
        elif isinstance(func, ast.Attribute):
            self.visit_subexpressions(func.value)

    def visit_subexpressions(self, node: ast.AST) -> None:
        """Calls inside an attribute chain we resolved (`__import__("os").system`)."""
        while isinstance(node, ast.Attribute):
            node = node.value
        if isinstance(node, ast.Call):
            self.visit(node)

    def check_method(self, node: ast.Call, func: ast.Attribute, name: str | None) -> None:
        method = func.attr
        if name is not None and name.split(".")[0] in _MODULES:
            return
        if method in _PATH_METHODS:
            self.flag(node, _FILE, f".{method}() changes files")
        elif method in _PATH_ONLY_METHODS and self.is_path(func.value):
            self.flag(node, _FILE, f"Path.{method}() moves a file")
        elif method == "open" and name is None:
            modes = [v for v in (_literal(a) for a in node.args) if v is not None and re.fullmatch(r"[rwxabtU+]+", v)]
            mode_kw = next((k.value for k in node.keywords if k.arg == "mode"), None)
            if mode_kw is not None:
                modes.append(_literal(mode_kw) or "w")  # a mode computed at run time counts as a write
            if any(set(m) & set("wax+") for m in modes):
                self.flag(node, _FILE, f".open() with mode {modes[0]!r} writes a file")
        elif method in _FRAME_WRITERS and (node.args or any(k.arg in ("path_or_buf", "path", "excel_writer")
                                                            for k in node.keywords)):
            self.flag(node, _FILE, f".{method}() writes a file")
        elif method in _SQL_WRITERS:
            self.flag_sql(node, f".{method}() writes to a database table")
        elif method in _SQL_CALLS:
            self.check_sql(node, f".{method}()", node.args[0] if node.args else None)
        elif method == "copy" and node.args and (_literal(node.args[0]) or "").lstrip().upper().startswith("COPY"):
            self.check_sql(node, ".copy()", node.args[0])

    def check_open(self, node: ast.Call, name: str, index: int) -> None:
        mode_node = next((k.value for k in node.keywords if k.arg == "mode"), None)
        if mode_node is None and len(node.args) > index:
            mode_node = node.args[index]
        if mode_node is None:
            return
        mode = _literal(mode_node)
        if mode is None:
            self.flag(node, _FILE, f"{name}() with a mode computed at run time may write a file")
        elif set(mode) & set("wax+"):
            self.flag(node, _FILE, f"{name}(…, {mode!r}) writes a file")

    def check_os_open(self, node: ast.Call) -> None:
        flags = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "flags"), None)
        words = {n.attr for n in ast.walk(flags) if isinstance(n, ast.Attribute)} if flags is not None else set()
        words |= {n.id for n in ast.walk(flags) if isinstance(n, ast.Name)} if flags is not None else set()
        if flags is None or words & {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"} or not words:
            self.flag(node, _FILE, "os.open() may write a file")

    def check_getattr(self, node: ast.Call) -> None:
        if len(node.args) < 2 or _literal(node.args[1]) is not None:
            return  # getattr(x, "name") was resolved as x.name already
        base = self.resolve(node.args[0])
        if base is not None:
            self.flag(node, _EVAL, f"getattr() on {base} with a name computed at run time")

    def check_yaml(self, node: ast.Call, name: str) -> None:
        loader = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "Loader"), None)
        loader_name = (self.resolve(loader) or getattr(loader, "attr", "") or getattr(loader, "id", "")) if loader else ""
        if str(loader_name).split(".")[-1] not in ("SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"):
            self.flag(node, _DYNAMIC, f"{name}() without a safe loader can build arbitrary objects")

    def check_sql(self, node: ast.Call, what: str, arg: ast.AST | None) -> None:
        if arg is None:
            return
        if isinstance(arg, ast.Call) and (self.resolve(arg.func) or "").endswith(".text"):
            return  # execute(text("…")): the text() call is checked on its own
        text = _literal(arg)
        if text is None and isinstance(arg, ast.Name):
            text = self.strings.get(arg.id)
        if text is None:
            self.flag_sql(node, f"{what} runs SQL built at run time")
            return
        risk = _sql_risk(text)
        self.sql.append(risk)
        if not risk.read_only:
            first = risk.reasons[0] if risk.reasons else risk.level
            self.flag_sql(node, f"{what} runs SQL that is not a plain read ({risk.level}): {first}")

    def flag_sql(self, node: ast.AST, sentence: str) -> None:
        self.flag(node, "sql_write", sentence)

    # -- IPython
    def is_ipython(self, func: ast.AST) -> TypeGuard[ast.Attribute]:
        """`get_ipython().x`, or `ip.x` after `ip = get_ipython()`."""
        if not isinstance(func, ast.Attribute):
            return False
        base = func.value
        return (isinstance(base, ast.Call) and _is_get_ipython(base)) or (
            isinstance(base, ast.Name) and base.id in self.shells)

    def check_ipython(self, node: ast.Call, func: ast.Attribute) -> None:
        line = getattr(node, "lineno", 0) + self.offset
        args = [_literal(a) for a in node.args]
        if func.attr in ("run_line_magic", "magic", "run_cell_magic"):
            if not args or args[0] is None:
                self.flag(node, _SHELL, "a magic chosen at run time")
                return
            name = args[0]
            if func.attr == "magic":  # old spelling: magic("name args")
                name, _, rest = name.partition(" ")
                args = [name, rest]
            cell = func.attr == "run_cell_magic"
            arg = (args[2] if len(args) > 2 else "") if cell else (args[1] if len(args) > 1 else "")
            if cell and name not in _CODE_MAGICS and len(args) > 1 and args[1]:
                arg = f"{args[1]}\n{arg or ''}"
            _magic(self.found, self.sql, name, arg or "", line, cell)
        elif func.attr in _IPY_METHODS:
            flag, what = _IPY_METHODS[func.attr]
            command = args[0] if args and args[0] is not None else ""
            shown = "!" if func.attr in ("system", "getoutput") else f"get_ipython().{func.attr}()"
            self.found.add(_RULE[flag], f"line {line}: {shown} {what}" + (f": {_snippet(command)}" if command else ""),
                           flag)


def _is_get_ipython(call: ast.Call) -> bool:
    func = call.func
    return (isinstance(func, ast.Name) and func.id == "get_ipython") or (
        isinstance(func, ast.Attribute) and func.attr == "get_ipython")


def _match_module(name: str) -> str | None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in _MODULES:
            return candidate
    return None


def _match_name(name: str) -> tuple[str, str] | None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):  # os.environ.get → os.environ
        candidate = ".".join(parts[:i])
        if candidate in _NAMES:
            return _NAMES[candidate]
    for key, rule in _NAMES.items():
        if key.endswith("*") and name.startswith(key[:-1]):
            return rule
    return None


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _keyword_true(node: ast.Call, name: str) -> bool:
    return any(k.arg == name and not (isinstance(k.value, ast.Constant) and not k.value.value) for k in node.keywords)


@lru_cache(maxsize=256)
def _sql_risk(text: str) -> Risk:
    """SQL embedded in Python: the dialect is not known, so the first one that parses it."""
    risk = analyze_sql(text, "postgresql")
    if risk.parsed:
        return risk
    for dialect in ("mysql", "sqlite"):
        other = analyze_sql(text, dialect)
        if other.parsed:
            return other
    bound = _PLACEHOLDERS.sub("NULL", text)  # the driver sends values where %s, %(name)s, :name stand
    if bound != text:
        for dialect in ("postgresql", "mysql", "sqlite"):
            other = analyze_sql(bound, dialect)
            if other.parsed:
                return other
    return risk


_PLACEHOLDERS = re.compile(r"%\(\w+\)s|%s|(?<![:\w]):[A-Za-z_]\w*")


def _snippet(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
