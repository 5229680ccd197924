"""Static scan of Python cells: every flag found, through aliases and IPython syntax, and not in strings."""

from __future__ import annotations

import json
from typing import NamedTuple

import pytest

from cellgate.gateway.risk import LEVELS, PYTHON_FLAGS, analyze, analyze_python
from cellgate.gateway.risk import python as pyscan


class Case(NamedTuple):
    id: str
    code: str
    level: str
    flags: tuple[str, ...]          # must be present; () means: no flags at all
    parsed: bool = True


CASES = [
    # ------------------------------------------------------------------ subprocess
    Case("import-subprocess", "import subprocess\nsubprocess.run(['ls'])", "high", ("subprocess",)),
    Case("subprocess-alias", "import subprocess as sp\nsp.run(['ls'])", "high", ("subprocess",)),
    Case("from-os-import-system", "from os import system\nsystem('ls')", "high", ("subprocess",)),
    Case("from-os-import-system-as", "from os import system as run\nrun('ls')", "high", ("subprocess",)),
    Case("os-star-import", "from os import *\nsystem('ls')", "high", ("subprocess",)),
    Case("os-popen", "import os\nos.popen('ls').read()", "high", ("subprocess",)),
    Case("os-exec", "import os\nos.execvp('sh', ['sh'])", "high", ("subprocess",)),
    Case("os-spawn", "import os\nos.spawnl(os.P_WAIT, '/bin/ls')", "high", ("subprocess",)),
    Case("pty", "import pty\npty.spawn('/bin/sh')", "high", ("subprocess",)),
    Case("os-from-earlier-cell", "os.system('rm -rf /tmp/x')", "high", ("subprocess",)),
    Case("alias-from-earlier-cell", "runner.check_output(['id'])", "high", ("subprocess",)),
    Case("dunder-import", "__import__('os').system('id')", "high", ("subprocess", "eval_exec")),
    Case("getattr-literal", "import os\ngetattr(os, 'system')('id')", "high", ("subprocess",)),
    Case("asyncio-subprocess", "import asyncio\nawait asyncio.create_subprocess_shell('ls')", "high",
         ("subprocess",)),
    # ------------------------------------------------------------------ network
    Case("requests", "import requests\nrequests.get('https://example.com')", "high", ("network",)),
    Case("socket", "import socket\ns = socket.create_connection(('x', 80))", "high", ("network",)),
    Case("urllib-request", "from urllib.request import urlopen\nurlopen('http://x')", "high", ("network",)),
    Case("urllib-via-package", "import urllib.request\nurllib.request.urlopen('http://x')", "high", ("network",)),
    Case("http-client", "import http.client\nhttp.client.HTTPSConnection('x')", "high", ("network",)),
    Case("httpx", "import httpx", "high", ("network",)),
    Case("aiohttp", "import aiohttp", "high", ("network",)),
    Case("smtplib", "import smtplib\nsmtplib.SMTP('mail')", "high", ("network",)),
    Case("paramiko", "import paramiko", "high", ("network",)),
    # ------------------------------------------------------------------ files
    Case("open-write", "open('/tmp/x', 'w').write('x')", "medium", ("file_write",)),
    Case("open-append-keyword", "open(p, mode='a')", "medium", ("file_write",)),
    Case("open-plus", "open(p, 'r+')", "medium", ("file_write",)),
    Case("open-dynamic-mode", "open(p, m)", "medium", ("file_write",)),
    Case("pathlib-write-text", "from pathlib import Path\nPath('x').write_text('a')", "medium", ("file_write",)),
    Case("pathlib-unlink", "import pathlib\np = pathlib.Path('x')\np.unlink()", "medium", ("file_write",)),
    Case("pathlib-rename", "from pathlib import Path\np = Path('a') / 'b'\np.rename('c')", "medium", ("file_write",)),
    Case("shutil-rmtree", "import shutil\nshutil.rmtree('/data')", "medium", ("file_write",)),
    Case("os-remove", "import os\nos.remove('x')", "medium", ("file_write",)),
    Case("os-makedirs", "import os\nos.makedirs('a/b', exist_ok=True)", "medium", ("file_write",)),
    Case("os-chmod", "import os\nos.chmod('x', 0o777)", "medium", ("file_write",)),
    Case("dataframe-to-csv", "df.to_csv('/tmp/out.csv')", "medium", ("file_write",)),
    Case("writefile-magic", "%%writefile run.py\nprint(1)\n", "medium", ("file_write",)),
    # ------------------------------------------------------------------ eval / exec
    Case("eval", "eval('1 + 1')", "high", ("eval_exec",)),
    Case("exec", "exec(source)", "high", ("eval_exec",)),
    Case("compile", "code = compile(src, 'x', 'exec')", "high", ("eval_exec",)),
    Case("importlib", "import importlib\nm = importlib.import_module(name)", "high", ("eval_exec",)),
    Case("getattr-computed", "import os\nf = getattr(os, 'sys' + 'tem')", "high", ("eval_exec",)),
    Case("builtins-eval", "import builtins\nbuiltins.eval('1')", "high", ("eval_exec",)),
    Case("run-magic", "%run other.py", "high", ("eval_exec",)),
    # ------------------------------------------------------------------ environment
    Case("os-environ", "import os\nprint(os.environ['DATABASE_URL'])", "medium", ("env_access",)),
    Case("os-environ-get", "import os\nos.environ.get('TOKEN')", "medium", ("env_access",)),
    Case("os-getenv", "from os import getenv\ngetenv('PASSWORD')", "medium", ("env_access",)),
    Case("os-putenv", "import os\nos.putenv('X', '1')", "medium", ("env_access",)),
    Case("env-magic", "%env", "medium", ("env_access",)),
    Case("env-automagic", "env", "medium", ("env_access",)),
    # ------------------------------------------------------------------ dynamic code
    Case("pickle-loads", "import pickle\npickle.loads(blob)", "high", ("dynamic_code",)),
    Case("marshal-loads", "import marshal\nmarshal.loads(blob)", "high", ("dynamic_code",)),
    Case("ctypes", "import ctypes\nctypes.CDLL('libc.so.6')", "high", ("dynamic_code",)),
    Case("cffi", "from cffi import FFI", "high", ("dynamic_code",)),
    Case("read-pickle", "import pandas as pd\npd.read_pickle('x.pkl')", "high", ("dynamic_code",)),
    Case("yaml-load", "import yaml\nyaml.load(text)", "high", ("dynamic_code",)),
    # ------------------------------------------------------------------ shell magics
    Case("bang", "!ls -la /", "high", ("shell_magic",)),
    Case("bang-assignment", "files = !ls", "high", ("shell_magic",)),
    Case("bang-indented", "if True:\n    !rm -rf /tmp/x", "high", ("shell_magic",)),
    Case("bash-cell", "%%bash\nrm -rf /tmp/x\n", "high", ("shell_magic",)),
    Case("sx", "%sx ls", "high", ("shell_magic",)),
    Case("system", "%system ls", "high", ("shell_magic",)),
    Case("pip", "%pip install evil", "high", ("shell_magic",)),
    Case("unknown-magic", "%sql DELETE FROM accounts", "high", ("shell_magic",)),
    Case("ipython-api", "ip = get_ipython()\nip.system('id')", "high", ("shell_magic",)),
    Case("ipython-run-cell", "get_ipython().run_cell(src)", "high", ("eval_exec",)),
    Case("time-wraps-python", "%time os.system('x')", "high", ("subprocess",)),
    Case("time-cell-wraps-python", "%%time\nimport subprocess\nsubprocess.run(['ls'])\n", "high", ("subprocess",)),
    # ------------------------------------------------------------------ SQL run from Python
    Case("sql-delete", "cur.execute('DELETE FROM accounts')", "high", ("sql_write",)),
    Case("sql-update-through-variable", "q = 'UPDATE t SET a = 1 WHERE id = 2'\ncur.execute(q)", "high",
         ("sql_write",)),
    Case("sql-built-at-run-time", "cur.execute(f'SELECT * FROM {table}')", "high", ("sql_write",)),
    Case("sql-to-sql", "df.to_sql('accounts', engine, if_exists='replace')", "high", ("sql_write",)),
    Case("sql-text", "from sqlalchemy import text\nconn.execute(text('DROP TABLE t'))", "high", ("sql_write",)),
    # ------------------------------------------------------------------ unparseable
    Case("syntax-error", "def f(:\n    pass", "high", ("unparseable",), parsed=False),
    Case("python2-print", "print 'hello'", "high", ("unparseable",), parsed=False),
    Case("syntax-error-keeps-words", "import subprocess\nprint 'x'", "high", ("unparseable", "subprocess"),
         parsed=False),
    Case("null-byte", "x = 1\x00", "high", ("unparseable",), parsed=False),
    # ------------------------------------------------------------------ nothing to flag
    Case("empty", "", "low", ()),
    Case("plain-pandas", "%matplotlib inline\nimport pandas as pd\ndf = pd.read_csv('x.csv')\ndf.describe()", "low",
         ()),
    Case("string-mentions-subprocess", "x = 'import subprocess; os.system(1)'\nprint(x)  # os.system", "low", ()),
    Case("shell-in-a-string", "s = '''\n!rm -rf /\n'''", "low", ()),
    Case("open-read", "with open(path) as f:\n    data = f.read()", "low", ()),
    Case("open-rb", "open(p, 'rb').read()", "low", ()),
    Case("pickle-dumps", "import pickle\nb = pickle.dumps(obj)", "low", ()),
    Case("urllib-parse", "from urllib.parse import quote\nquote('a b')", "low", ()),
    Case("shutil-which", "import shutil\nshutil.which('psql')", "low", ()),
    Case("os-path", "import os\nos.path.join('a', 'b')", "low", ()),
    Case("pandas-rename", "df = df.rename(columns={'a': 'b'})\ns = s.replace('x', 'y')", "low", ()),
    Case("to-csv-to-string", "text = df.to_csv()", "low", ()),
    Case("yaml-safe", "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)\nyaml.safe_load(text)", "low", ()),
    Case("sql-select", "cur.execute('SELECT id FROM accounts WHERE id = %s', (1,))", "low", ()),
    Case("sql-read-sql", "import pandas as pd\npd.read_sql('SELECT * FROM orders', conn)", "low", ()),
    Case("local-name-shadows", "os = FakeOS()\nos.system('x')", "low", ()),
    Case("re-compile", "import re\npattern = re.compile('a+')", "low", ()),
    # compiling these warns (invalid escape, `is` with a literal); with warnings as errors they must still parse
    Case("code-that-warns", "import re\nm = re.match('\\d+', s)\nok = x is 1", "low", ()),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_python_risk(case: Case) -> None:
    result = analyze_python(case.code)
    assert result.level == case.level, result.reasons
    if case.flags:
        assert set(case.flags) <= set(result.flags), result.reasons
    else:
        assert result.flags == (), result.reasons
    assert result.parsed is case.parsed
    assert result.read_only is False
    assert result.level in LEVELS
    assert set(result.flags) <= set(PYTHON_FLAGS)
    assert list(result.flags) == sorted(set(result.flags))
    assert result.reasons


def test_every_flag_is_exercised() -> None:
    seen = {flag for case in CASES for flag in case.flags}
    assert seen == set(PYTHON_FLAGS)
    assert len(CASES) >= 25


def test_reasons_name_the_line() -> None:
    result = analyze_python("x = 1\nimport subprocess as sp\n\nsp.check_output(['id'])")
    assert result.reasons == ("line 2: subprocess starts processes", "line 4: subprocess.check_output starts processes")


def test_magic_body_lines_are_the_cells_lines() -> None:
    result = analyze_python("%%time\nx = 1\nimport os\nos.system('id')\n")
    assert "line 4: os.system starts a process" in result.reasons


def test_sql_statements_and_tables_are_reported() -> None:
    result = analyze_python("cur.execute('DELETE FROM billing.invoices')\ncur.execute('SELECT * FROM users')")
    assert result.statements == ("DELETE", "SELECT")
    assert result.tables == ("billing.invoices", "users")
    assert result.flags == ("sql_write",)
    assert "DELETE on billing.invoices has no WHERE clause" in result.reasons[0]


def test_clean_python_is_low_with_a_reason() -> None:
    result = analyze_python("print(sum(range(10)))")
    assert (result.level, result.flags, result.parsed) == ("low", (), True)
    assert json.loads(json.dumps(result.as_dict())) == result.as_dict()


def test_dispatch_to_python() -> None:
    assert analyze("import socket", "python", None).flags == ("network",)


def test_without_ipython_magic_lines_are_found_in_the_raw_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyscan, "_transformer", lambda: None)
    assert "shell_magic" in analyze_python("x = 1\n!rm -rf /tmp/x\nprint(x)").flags
    indented = analyze_python("if x:\n    !rm -rf /tmp/x\nprint(x)")
    assert indented.flags == ("shell_magic",) and indented.parsed
    assert "shell_magic" in analyze_python("%%bash\nrm -rf /\n").flags
    assert analyze_python("%env").flags == ("env_access",)
    assert "subprocess" in analyze_python("%time os.system('x')").flags
    assert analyze_python("print(1)").flags == ()


def test_deeply_nested_code_fails_closed() -> None:
    result = analyze_python("x = " + "(" * 5000 + "1" + ")" * 5000)
    assert result.parsed is False and "unparseable" in result.flags
