"""Which SQL functions the analysis knows: allow-lists of pure reads, and the functions with effects.

Allow-lists: functions, operators and types known to be pure reads, per sqlglot dialect.

A function call, an operator or a cast the analysis finds in a statement is *known* only when it
is listed here for the target's dialect; anything else (a user-defined function, a built-in with
effects, a name this file does not list) makes the statement ``unknown_function``: not read-only,
reviewed. Every entry must be free of side effects: it must not write, read server files, signal
or wait for other sessions, sleep, take locks, change settings, or run SQL given as text. When
in doubt an entry stays out: a missing name costs a review, a wrong one an unreviewed write.

Names are lower case. PostgreSQL names are checked after PostgreSQL's own parser has decoded
them (``U&"\\0064blink"`` is ``dblink``); a schema-qualified call is known only as
``pg_catalog.<listed name>``.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_SQL_COMMON = _words("""
    abs ceil ceiling floor round sign sqrt exp ln log log10 power pow mod pi degrees radians
    sin cos tan asin acos atan atan2 cot
    count sum avg min max
    coalesce nullif greatest least
    lower upper length char_length character_length octet_length bit_length substr substring
    replace trim ltrim rtrim lpad rpad left right repeat reverse concat concat_ws position
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
    cast
""")

#: PostgreSQL functions (pg_catalog) that only compute a value or read the catalog.
POSTGRES_FUNCTIONS: frozenset[str] = _SQL_COMMON | _words("""
    array_agg string_agg bool_and bool_or every bit_and bit_or bit_xor json_agg jsonb_agg
    json_object_agg jsonb_object_agg stddev stddev_pop stddev_samp variance var_pop var_samp corr
    covar_pop covar_samp regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx
    regr_sxy regr_syy percentile_cont percentile_disc mode range_agg range_intersect_agg xmlagg
    any_value grouping
    cbrt div factorial gcd lcm min_scale scale trim_scale trunc width_bucket random
    acosd asind atand atan2d cosd cotd sind tand sinh cosh tanh asinh acosh atanh
    ascii btrim chr format initcap md5 normalize overlay quote_ident quote_literal quote_nullable
    regexp_count regexp_instr regexp_like regexp_match regexp_matches regexp_replace
    regexp_split_to_array regexp_split_to_table regexp_substr split_part starts_with
    string_to_array string_to_table strpos to_ascii to_hex translate unistr encode decode
    convert convert_from convert_to sha224 sha256 sha384 sha512 get_bit get_byte set_bit set_byte
    bit_count textcat similar_to_escape like_escape casefold
    age clock_timestamp date_bin date_part date_trunc extract isfinite justify_days justify_hours
    justify_interval make_date make_interval make_time make_timestamp make_timestamptz now
    statement_timestamp timeofday transaction_timestamp to_char to_date to_number to_timestamp
    timezone overlaps
    to_json to_jsonb array_to_json row_to_json json_build_array jsonb_build_array json_build_object
    jsonb_build_object json_object jsonb_object json_array_elements jsonb_array_elements
    json_array_elements_text jsonb_array_elements_text json_array_length jsonb_array_length
    json_each jsonb_each json_each_text jsonb_each_text json_extract_path jsonb_extract_path
    json_extract_path_text jsonb_extract_path_text json_object_keys jsonb_object_keys
    json_strip_nulls jsonb_strip_nulls jsonb_set jsonb_set_lax jsonb_insert jsonb_pretty
    json_typeof jsonb_typeof jsonb_path_exists jsonb_path_match jsonb_path_query
    jsonb_path_query_array jsonb_path_query_first jsonb_path_exists_tz jsonb_path_match_tz
    jsonb_path_query_tz jsonb_path_query_array_tz jsonb_path_query_first_tz json_scalar
    array_append array_cat array_dims array_fill array_length array_lower array_ndims
    array_position array_positions array_prepend array_remove array_replace array_to_string
    array_upper cardinality trim_array unnest generate_series generate_subscripts
    num_nulls num_nonnulls
    current_database current_schema current_schemas current_user session_user version pg_typeof
    format_type pg_backend_pid inet_client_addr inet_client_port inet_server_addr inet_server_port
    gen_random_uuid pg_postmaster_start_time pg_conf_load_time
    has_table_privilege has_column_privilege has_schema_privilege has_database_privilege
    has_function_privilege has_sequence_privilege pg_has_role
    pg_get_viewdef pg_get_functiondef pg_get_function_arguments pg_get_function_result
    pg_get_indexdef pg_get_constraintdef pg_get_expr pg_get_triggerdef pg_get_ruledef
    pg_get_serial_sequence pg_get_userbyid pg_table_is_visible pg_type_is_visible
    pg_function_is_visible pg_table_size pg_relation_size pg_total_relation_size pg_indexes_size
    pg_size_pretty pg_size_bytes pg_column_size pg_database_size obj_description col_description
    shobj_description to_regclass to_regtype to_regproc to_regnamespace to_regrole
    pg_encoding_to_char pg_char_to_encoding
    lower_inc upper_inc lower_inf upper_inf isempty range_merge int4range int8range numrange
    tsrange tstzrange daterange
    host hostmask masklen netmask network broadcast family abbrev set_masklen inet_same_family
    inet_merge
    to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd
    ts_headline setweight strip numnode querytree array_to_tsvector tsvector_to_array
    area center diameter height width point box circle line lseg path polygon npoints isclosed
    isopen radius
    xpath xpath_exists xml_is_well_formed xml_is_well_formed_document xml_is_well_formed_content
    xmlcomment xmltext
    int2 int4 int8 float4 float8 numeric text varchar bpchar name bool date time timetz timestamp
    timestamptz interval
""")

#: MySQL / MariaDB functions that only compute a value.
MYSQL_FUNCTIONS: frozenset[str] = _SQL_COMMON | _words("""
    conv crc32 log2 rand truncate
    ascii bin char elt export_set field find_in_set format from_base64 hex insert instr lcase
    locate make_set mid oct ord quote regexp_instr regexp_like regexp_replace regexp_substr
    soundex space strcmp substring_index to_base64 ucase unhex weight_string md5 sha sha1 sha2
    adddate addtime convert_tz curdate current_date current_time current_timestamp curtime date
    date_add date_format date_sub datediff day dayname dayofmonth dayofweek dayofyear extract
    from_days from_unixtime get_format hour last_day localtime localtimestamp makedate maketime
    microsecond minute month monthname now period_add period_diff quarter sec_to_time second
    str_to_date subdate subtime sysdate time time_format time_to_sec timediff timestamp
    timestampadd timestampdiff to_days to_seconds unix_timestamp utc_date utc_time utc_timestamp
    week weekday weekofyear year yearweek
    bit_and bit_or bit_xor group_concat json_arrayagg json_objectagg std stddev stddev_pop
    stddev_samp var_pop var_samp variance median percentile_cont percentile_disc
    if ifnull isnull interval
    json_array json_object json_quote json_contains json_contains_path json_extract json_unquote
    json_keys json_length json_depth json_type json_valid json_search json_value json_overlaps
    json_merge_patch json_merge_preserve json_set json_insert json_replace json_remove
    json_array_append json_array_insert json_pretty json_compact json_detailed json_loose
    json_exists json_query json_table
    convert database schema user current_user session_user system_user version connection_id
    uuid inet_aton inet_ntoa inet6_aton inet6_ntoa is_ipv4 is_ipv6 bit_count charset collation
    coercibility
""")

#: SQLite functions that only compute a value (table-valued pragma functions exist only for
#: pragmas without side effects).
SQLITE_FUNCTIONS: frozenset[str] = _SQL_COMMON | _words("""
    char format glob hex ifnull iif instr like likelihood likely printf quote random randomblob
    soundex typeof unhex unicode unlikely zeroblob changes total_changes last_insert_rowid
    date time datetime julianday unixepoch strftime timediff
    group_concat string_agg total
    log2 trunc
    json jsonb json_array jsonb_array json_array_length json_extract jsonb_extract json_insert
    jsonb_insert json_object jsonb_object json_patch jsonb_patch json_remove jsonb_remove
    json_replace jsonb_replace json_set jsonb_set json_type json_valid json_quote
    json_group_array jsonb_group_array json_group_object jsonb_group_object json_each json_tree
    json_error_position json_pretty
    sqlite_version sqlite_source_id
    pragma_table_info pragma_table_xinfo pragma_index_list pragma_index_info pragma_index_xinfo
    pragma_foreign_key_list generate_series
""")

#: PostgreSQL's built-in operator symbols (pg_operator); anything else is a user's operator
#: and calls a function the analysis cannot see.
POSTGRES_OPERATORS: frozenset[str] = _words("""
    + - * / % ^ |/ ||/ @ & | # ~ << >> = <> != < > <= >= || ~~ !~~ ~~* !~~* ~* !~ !~*
    -> ->> #> #>> @> <@ ? ?| ?& #- @? @@ @@@ && &< &> <<| |>> &<| |&> <-> <^ >^ ?# ?- ?-| ?||
    ~= @-@ ## <<= >>= -|- !! BETWEEN NOT_BETWEEN BETWEEN_SYM NOT_BETWEEN_SYM
""")

#: PostgreSQL built-in types a cast may name: their input functions are the server's own.
POSTGRES_TYPES: frozenset[str] = _words("""
    int2 int4 int8 smallint integer bigint int float4 float8 real numeric decimal money
    text varchar bpchar char name bool boolean date time timetz timestamp timestamptz interval
    json jsonb uuid bytea inet cidr macaddr macaddr8 bit varbit oid xml tsvector tsquery
    point line lseg box path polygon circle int4range int8range numrange tsrange tstzrange
    daterange int4multirange int8multirange nummultirange tsmultirange tstzmultirange
    datemultirange regclass regtype regproc regprocedure regoper regoperator regnamespace regrole
    regconfig regdictionary xid xid8 cid tid pg_lsn jsonpath record
""")

FUNCTIONS = {"postgres": POSTGRES_FUNCTIONS, "mysql": MYSQL_FUNCTIONS, "sqlite": SQLITE_FUNCTIONS}


def known_function(name: str, dialect: str, schema: str | None = None) -> bool:
    """Whether ``name`` (lower case) is a pure built-in of ``dialect`` (``postgres``, ``mysql``, ``sqlite``).

    A schema-qualified name is known only in PostgreSQL and only as ``pg_catalog.<listed name>``.
    """
    if schema is not None and (dialect != "postgres" or schema != "pg_catalog"):
        return False
    return name in FUNCTIONS[dialect]


def known_operator(name: str, schema: str | None = None) -> bool:
    """Whether a PostgreSQL operator symbol is built in (``OPERATOR(pg_catalog.+)`` included)."""
    return (schema is None or schema == "pg_catalog") and name in POSTGRES_OPERATORS


def known_type(name: str, schema: str | None = None) -> bool:
    """Whether a PostgreSQL type a cast names is built in."""
    return (schema is None or schema == "pg_catalog") and name in POSTGRES_TYPES


# Functions with effects even inside a SELECT: name → (rule, extra flags, what it does).
_FUNCTIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # PostgreSQL
    "pg_terminate_backend": ("sql.server_access", (), "ends another session"),
    "pg_cancel_backend": ("sql.function_high", (), "cancels another session's query"),
    "pg_reload_conf": ("sql.function_high", (), "reloads the server configuration"),
    "pg_promote": ("sql.server_access", (), "promotes a standby server"),
    "pg_rotate_logfile": ("sql.function_high", (), "rotates the server log"),
    "pg_switch_wal": ("sql.function_high", (), "switches the write-ahead log"),
    "pg_create_restore_point": ("sql.function_high", (), "creates a restore point"),
    "pg_drop_replication_slot": ("sql.function_high", (), "drops a replication slot"),
    "pg_create_physical_replication_slot": ("sql.function_high", (), "creates a replication slot"),
    "pg_create_logical_replication_slot": ("sql.function_high", (), "creates a replication slot"),
    "set_config": ("sql.function_state", ("session_change",), "changes a setting"),
    "nextval": ("sql.function_state", (), "advances a sequence"),
    "setval": ("sql.function_state", (), "moves a sequence"),
    "pg_notify": ("sql.function_state", (), "notifies other sessions"),
    "pg_sleep": ("sql.function_state", (), "holds the session (and its locks) while it sleeps"),
    "pg_sleep_for": ("sql.function_state", (), "holds the session (and its locks) while it sleeps"),
    "pg_sleep_until": ("sql.function_state", (), "holds the session (and its locks) while it sleeps"),
    "lo_import": ("sql.server_access", (), "reads a file on the database server"),
    "lo_export": ("sql.file_write", ("file_write",), "writes a file on the database server"),
    "lo_unlink": ("sql.function_high", ("write",), "deletes a large object"),
    "lo_create": ("sql.function_high", ("write",), "creates a large object"),
    "lo_creat": ("sql.function_high", ("write",), "creates a large object"),
    "lo_from_bytea": ("sql.function_high", ("write",), "creates a large object"),
    "lo_put": ("sql.function_high", ("write",), "writes a large object"),
    "lowrite": ("sql.function_high", ("write",), "writes a large object"),
    "pg_read_file": ("sql.server_access", (), "reads a file on the database server"),
    "pg_read_binary_file": ("sql.server_access", (), "reads a file on the database server"),
    "pg_stat_file": ("sql.server_access", (), "inspects a file on the database server"),
    "pg_file_write": ("sql.file_write", ("file_write",), "writes a file on the database server"),
    "pg_file_rename": ("sql.file_write", ("file_write",), "renames a file on the database server"),
    "pg_file_unlink": ("sql.file_write", ("file_write",), "deletes a file on the database server"),
    "query_to_xml": ("sql.function_high", (), "runs the SQL it is given as text"),
    "query_to_xmlschema": ("sql.function_high", (), "runs the SQL it is given as text"),
    "query_to_xml_and_xmlschema": ("sql.function_high", (), "runs the SQL it is given as text"),
    # MySQL / MariaDB
    "sleep": ("sql.function_state", (), "holds the connection (and its locks) while it sleeps"),
    "benchmark": ("sql.function_state", (), "burns server CPU on purpose"),
    "load_file": ("sql.server_access", (), "reads a file on the database server"),
    "get_lock": ("sql.function_state", ("lock",), "takes a named lock"),
    "release_lock": ("sql.function_state", ("lock",), "releases a named lock"),
    "release_all_locks": ("sql.function_state", ("lock",), "releases named locks"),
    "master_pos_wait": ("sql.function_state", (), "waits for replication"),
    "source_pos_wait": ("sql.function_state", (), "waits for replication"),
    "sys_exec": ("sql.server_access", (), "runs a program on the database server"),
    "sys_eval": ("sql.server_access", (), "runs a program on the database server"),
    # SQLite
    "load_extension": ("sql.server_access", (), "loads native code into the database process"),
    "writefile": ("sql.file_write", ("file_write",), "writes a file"),
    "readfile": ("sql.server_access", (), "reads a file"),
    "fts3_tokenizer": ("sql.function_high", (), "registers a tokenizer by memory address"),
}
_FUNCTION_PREFIXES: tuple[tuple[str, tuple[str, tuple[str, ...], str]], ...] = (
    ("dblink", ("sql.function_high", (), "runs SQL on another server")),
    ("pg_advisory_", ("sql.function_state", ("lock",), "takes or releases an advisory lock")),
    ("pg_try_advisory_", ("sql.function_state", ("lock",), "takes an advisory lock")),
    ("pg_ls_", ("sql.server_access", (), "lists a directory on the database server")),
)


def _function_rule(name: str) -> tuple[str, tuple[str, ...], str] | None:
    name = name.lower()
    found = _FUNCTIONS.get(name)
    if found is None:
        for prefix, rule in _FUNCTION_PREFIXES:
            if name.startswith(prefix):
                return rule
    return found
