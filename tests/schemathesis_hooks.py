"""schemathesis hooks for tests/schemathesis.rs (loaded through schemathesis.toml).

An `Idempotency-Key` names one intended request: the server answers a second,
different request with the same key 422, as the IETF draft and issue 14 say.
schemathesis draws header values from a small pool, so unrelated test cases
would share keys. Every well-formed key is therefore made unique per call;
malformed ones (the negative cases) are sent as generated. The replay, 409 and
422 behaviour is tested by tests/idempotency.rs.
"""

import re
import uuid

import schemathesis

WELL_FORMED = re.compile(r"^[!-~]{1,255}$")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and WELL_FORMED.match(key):
        case.headers["Idempotency-Key"] = f"st-{uuid.uuid4()}"
