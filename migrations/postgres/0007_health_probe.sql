-- One row that every health check rewrites. A database that still answers reads but cannot
-- take a write (a full disk, a read-only standby, a lock that is never released) must not be
-- reported SERVING. A counter rather than a time: the check has no clock to bind.
CREATE TABLE health_probe (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    checks BIGINT NOT NULL
);
