-- Accounts (issue 13): login lockout, and API keys for programs.
--
-- Login attempts are claimed in `throttles` (per account and per address):
-- one upsert counts the attempt in its window, says in `admitted` whether the
-- row was free of a delay when it was claimed (the old `blocked_until`), and
-- sets the next delay once the window holds the limit. Every instance shares
-- the rows, and parallel claims queue on the row lock: none slips past.
ALTER TABLE throttles
    ADD COLUMN blocked_until timestamptz,
    ADD COLUMN admitted boolean NOT NULL DEFAULT true;

-- Wrong passwords (and second factors) in a row; at 100 the account is locked
-- until an administrator unlocks it (NIST SP 800-63B-4 §3.2.2).
ALTER TABLE users
    ADD COLUMN failed_logins integer NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    ADD COLUMN locked_at timestamptz;
