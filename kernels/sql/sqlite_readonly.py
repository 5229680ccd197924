"""The SQLite authorizer of read-only connections: what the engine may do, action by action.

SQLite reports every action it is about to compile into a statement (read a column, call a
function, run a pragma, attach, write, begin a transaction …) to the connection's authorizer;
a denied action makes the statement fail to prepare ("not authorized"), so nothing of it runs.
This allow-list lets through reads, the built-in functions below and the pragmas that only
read; everything else -- writes, CREATE/DROP/ALTER, ATTACH/DETACH, transaction control,
pragmas that set a value, unknown (e.g. extension) functions -- is denied.
"""

from __future__ import annotations

import sqlite3

FUNCTIONS = frozenset("""
abs char changes coalesce concat concat_ws format glob hex ifnull iif instr last_insert_rowid length like
likelihood likely lower ltrim max min nullif octet_length printf quote random randomblob replace round rtrim
sign soundex sqlite_compileoption_get sqlite_compileoption_used sqlite_offset sqlite_source_id sqlite_version
substr substring total_changes trim typeof unhex unicode unlikely upper zeroblob
avg count group_concat string_agg sum total
date time datetime julianday unixepoch strftime timediff current_date current_time current_timestamp
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log log10 log2 mod pi pow
power radians sin sinh sqrt tan tanh trunc
json json_array json_array_length json_extract json_insert json_object json_patch json_quote json_remove
json_replace json_set json_type json_valid json_group_array json_group_object json_each json_tree
jsonb jsonb_array jsonb_extract jsonb_insert jsonb_object jsonb_patch jsonb_remove jsonb_replace jsonb_set
jsonb_group_array jsonb_group_object json_error_position json_pretty
""".split())

#: pragmas allowed in their reading form only (no value: ``PRAGMA user_version``)
PRAGMAS_READ = frozenset("""
application_id auto_vacuum cache_size collation_list compile_options data_version database_list encoding
foreign_keys freelist_count function_list journal_mode module_list page_count page_size pragma_list
query_only schema_version user_version
""".split())
#: pragmas whose argument names what to read (``PRAGMA table_info(t)``)
PRAGMAS_WITH_ARGUMENT = frozenset("""
table_info table_xinfo table_list index_list index_info index_xinfo foreign_key_list
""".split())


def authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    """``Connection.set_authorizer`` callback: SQLITE_OK for reads, SQLITE_DENY for the rest."""
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_OK if (arg2 or "").lower() in FUNCTIONS else sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if name in PRAGMAS_WITH_ARGUMENT or (name in PRAGMAS_READ and arg2 is None):
            return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY
