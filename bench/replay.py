"""The transaction one request sent to PostgreSQL, read back from the cluster's log.

bench/run turns on log_statement (with log_line_prefix '@%p| ') for a moment,
makes one request, and hands the new part of the log to transaction_from_log,
which returns that request's transaction (BEGIN .. COMMIT of the backend that
ran fortifile_open_request, to its ROLLBACK for a read) as a pgbench script, each bound parameter put back
as the literal the log shows. Replayed by pgbench as the serving role on the
same cluster, it is the database's share of the request with no server around it.
"""

import re

PREFIX = "@%p| "
ENTRY = re.compile(r"@(\d+)\| (\w+):  (.*)")
EXECUTED = re.compile(r"(?:statement|execute [^:]+): (.*)", re.S)
PARAMS = re.compile(r"\$(\d+) = ('(?:[^']|'')*'|NULL)")


def entries(text):
    """(pid, level, message) per log entry; continuation lines join the entry above."""
    out = []
    for line in text.splitlines():
        m = ENTRY.match(line)
        if m:
            out.append([m.group(1), m.group(2), m.group(3)])
        elif out:
            out[-1][2] += "\n" + line
    return out


def statements(text):
    """(pid, sql) per executed statement, with its parameters substituted."""
    out = []
    for pid, level, body in entries(text):
        if level == "LOG":
            m = EXECUTED.match(body)
            if m:
                out.append([pid, m.group(1).strip()])
        elif level == "DETAIL" and body.startswith("parameters:") and out and out[-1][0] == pid:
            values = dict(PARAMS.findall(body))
            # One pass, so a value that itself contains "$2" is left as it is.
            out[-1][1] = re.sub(r"\$(\d+)", lambda m: values.get(m.group(1), m.group(0)), out[-1][1])
    return out


def transaction_from_log(text):
    """The pgbench script of the request's transaction found in text."""
    executed = statements(text)
    opening = next((i for i, (_, sql) in enumerate(executed) if "fortifile_open_request" in sql), None)
    if opening is None:
        raise ValueError("no request transaction in the log (is log_statement on?)")
    pid = executed[opening][0]
    positions = [i for i, (p, _) in enumerate(executed) if p == pid]
    mine = [executed[i][1] for i in positions]
    at = positions.index(opening)
    begin = max((i for i in range(at + 1) if mine[i].upper() == "BEGIN"), default=None)
    # A read ends with ROLLBACK (sent with the pool's release check), a write with COMMIT.
    end = next((i for i in range(at, len(mine)) if mine[i].upper() in ("COMMIT", "ROLLBACK")), None)
    if begin is None or end is None:
        raise ValueError("the request's transaction is not complete in the log")
    return "".join(sql + ";\n" for sql in mine[begin:end + 1])


SAMPLE = """@7| LOG:  statement: BEGIN
@9| LOG:  statement: BEGIN
@7| LOG:  execute sqlx_s_1: SELECT * FROM fortifile_open_request($1, $2, $3)
@7| DETAIL:  parameters: $1 = 'a1', $2 = '\\x0f', $3 = '2026-12-02 03:23:08+00'
@9| LOG:  execute sqlx_s_2: SELECT 1
@7| LOG:  execute sqlx_s_4: INSERT INTO audit_logs (details, target_id)
\tVALUES ($1, $11)
@7| DETAIL:  parameters: $1 = '{"name": "it''s, $2"}', $11 = NULL
@7| LOG:  statement: COMMIT
"""


def self_check():
    """What bench/run --dry-run checks: the parser still reads a log it should."""
    got = transaction_from_log(SAMPLE)
    want = ("BEGIN;\n"
            "SELECT * FROM fortifile_open_request('a1', '\\x0f', '2026-12-02 03:23:08+00');\n"
            "INSERT INTO audit_logs (details, target_id)\n\tVALUES ('{\"name\": \"it''s, $2\"}', NULL);\n"
            "COMMIT;\n")
    assert got == want, f"bench/replay.py: the sample log read back as\n{got}"
