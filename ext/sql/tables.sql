-- steep_repl tables: the node registry, coordinator state and audit log.
-- Every constraint is named so that a violation names what was wrong.

COMMENT ON SCHEMA steep_repl IS
    'steep-repl: node registry, coordinator state and append-only audit log (extension steep_repl).';

------------------------------------------------------------------------------
-- nodes
------------------------------------------------------------------------------
CREATE TABLE steep_repl.nodes (
    node_id        text        NOT NULL,
    node_name      text        NOT NULL,
    host           text        NOT NULL,
    port           integer     NOT NULL DEFAULT 5432,
    priority       integer     NOT NULL DEFAULT 50,
    is_coordinator boolean     NOT NULL DEFAULT false,
    last_seen      timestamptz,
    status         text        NOT NULL DEFAULT 'unknown',
    grpc_host      text,
    grpc_port      integer,
    role           text        NOT NULL DEFAULT 'data',
    CONSTRAINT nodes_pkey PRIMARY KEY (node_id),
    CONSTRAINT nodes_node_id_not_empty CHECK (node_id <> ''),
    CONSTRAINT nodes_node_name_not_empty CHECK (node_name <> ''),
    CONSTRAINT nodes_host_not_empty CHECK (host <> ''),
    CONSTRAINT nodes_port_range CHECK (port BETWEEN 1 AND 65535),
    CONSTRAINT nodes_priority_range CHECK (priority BETWEEN 1 AND 100),
    CONSTRAINT nodes_status_valid
        CHECK (status IN ('unknown', 'healthy', 'degraded', 'unreachable', 'offline')),
    CONSTRAINT nodes_grpc_host_not_empty CHECK (grpc_host <> ''),
    CONSTRAINT nodes_grpc_port_range CHECK (grpc_port BETWEEN 1 AND 65535),
    CONSTRAINT nodes_role_valid CHECK (role IN ('data', 'witness'))
);

CREATE INDEX idx_nodes_status ON steep_repl.nodes (status);
-- Unique and partial: at most one row may have is_coordinator = true.
CREATE UNIQUE INDEX idx_nodes_coordinator ON steep_repl.nodes (is_coordinator) WHERE is_coordinator;

COMMENT ON TABLE steep_repl.nodes IS
    'Node registry: one row per steep-repl node this node knows of, kept current by the local daemon.';
COMMENT ON COLUMN steep_repl.nodes.node_id IS 'Stable unique identifier of the node (the node_id of its daemon configuration).';
COMMENT ON COLUMN steep_repl.nodes.node_name IS 'Human-readable name of the node.';
COMMENT ON COLUMN steep_repl.nodes.host IS 'Host name or address of the node''s PostgreSQL server.';
COMMENT ON COLUMN steep_repl.nodes.port IS 'Port of the node''s PostgreSQL server (1..65535).';
COMMENT ON COLUMN steep_repl.nodes.priority IS 'Coordinator priority, 1..100; the highest healthy priority is elected.';
COMMENT ON COLUMN steep_repl.nodes.is_coordinator IS
    'True for the holder of the cluster''s coordinator record, as applied by steep_repl.apply_coordinator() (the only writer); at most one row is true.';
COMMENT ON COLUMN steep_repl.nodes.last_seen IS 'Time of the last heartbeat from this node; null until the first one.';
COMMENT ON COLUMN steep_repl.nodes.status IS 'unknown, healthy, degraded, unreachable or offline (offline is set by an operator).';
COMMENT ON COLUMN steep_repl.nodes.grpc_host IS 'Host where the node''s daemon answers gRPC; null until known.';
COMMENT ON COLUMN steep_repl.nodes.grpc_port IS 'Port where the node''s daemon answers gRPC (1..65535); null until known.';
COMMENT ON COLUMN steep_repl.nodes.role IS
    'data (a node with PostgreSQL, eligible as coordinator) or witness (votes in the cluster, has no PostgreSQL); set from the cluster membership by steep_repl.apply_membership().';
COMMENT ON INDEX steep_repl.nodes_pkey IS 'One row per node_id.';
COMMENT ON INDEX steep_repl.idx_nodes_status IS 'Finds nodes by status.';
COMMENT ON INDEX steep_repl.idx_nodes_coordinator IS 'Unique partial index: enforces at most one coordinator.';

------------------------------------------------------------------------------
-- coordinator_state
------------------------------------------------------------------------------
CREATE TABLE steep_repl.coordinator_state (
    key        text        NOT NULL,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT coordinator_state_pkey PRIMARY KEY (key),
    CONSTRAINT coordinator_state_key_dotted
        CHECK (key ~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$')
);

COMMENT ON TABLE steep_repl.coordinator_state IS
    'Key/value state for cluster coordination; keys are dotted names such as cluster.version or election.term. A projection of the cluster''s replicated state, written only by the steep-repl daemon through steep_repl.apply_state(); possibly stale, never the source of truth.';
COMMENT ON INDEX steep_repl.coordinator_state_pkey IS 'One row per key.';
COMMENT ON COLUMN steep_repl.coordinator_state.key IS 'Dotted key name, e.g. election.term.';
COMMENT ON COLUMN steep_repl.coordinator_state.value IS 'The value, as jsonb.';
COMMENT ON COLUMN steep_repl.coordinator_state.updated_at IS 'Time of the last change; kept current on every UPDATE.';

------------------------------------------------------------------------------
-- audit_log
------------------------------------------------------------------------------
CREATE SEQUENCE steep_repl.audit_log_id_seq;

-- Hands out audit_log ids that are never taken. A plain nextval() default is
-- not enough: restoring a pg_dump loads audit_log rows with their ids before
-- the sequence position, while the audit triggers already write rows for the
-- other tables being loaded; a taken id moves the sequence past the highest
-- id instead of failing the restore.
CREATE FUNCTION steep_repl.next_audit_id() RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    candidate bigint := nextval('steep_repl.audit_log_id_seq');
BEGIN
    IF EXISTS (SELECT 1 FROM steep_repl.audit_log a WHERE a.id = candidate) THEN
        PERFORM setval('steep_repl.audit_log_id_seq',
                       GREATEST((SELECT max(a.id) FROM steep_repl.audit_log a), candidate));
        candidate := nextval('steep_repl.audit_log_id_seq');
    END IF;
    RETURN candidate;
END
$$;
COMMENT ON FUNCTION steep_repl.next_audit_id() IS
    'The id of a new audit_log row (set by the trigger audit_log_stamp): the next sequence value, moved past the highest id when that value is already taken (after a pg_dump restore).';

CREATE TABLE steep_repl.audit_log (
    -- No default: the trigger audit_log_stamp (audit.sql) sets every id.
    id            bigint      NOT NULL,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    action        text        NOT NULL,
    actor         text        NOT NULL,
    target_type   text,
    target_id     text,
    old_value     jsonb,
    new_value     jsonb,
    client_ip     inet,
    success       boolean     NOT NULL DEFAULT true,
    error_message text,
    -- Idempotency key for events written by the daemon from its local spool:
    -- a replay after a crash must not insert the same event twice.
    event_id      uuid,
    CONSTRAINT audit_log_pkey PRIMARY KEY (id),
    CONSTRAINT audit_log_action_format CHECK (action ~ '^[a-z][a-z_]*(\.[a-z][a-z_]*)+$'),
    CONSTRAINT audit_log_actor_format CHECK (actor LIKE '_%@_%'),
    CONSTRAINT audit_log_target_type_valid CHECK (target_type IN ('node', 'state', 'daemon'))
);

CREATE INDEX idx_audit_log_occurred_at ON steep_repl.audit_log (occurred_at DESC);
CREATE INDEX idx_audit_log_actor ON steep_repl.audit_log (actor);
CREATE INDEX idx_audit_log_action ON steep_repl.audit_log (action);
CREATE INDEX idx_audit_log_target ON steep_repl.audit_log (target_type, target_id)
    WHERE target_type IS NOT NULL;
CREATE UNIQUE INDEX idx_audit_log_event_id ON steep_repl.audit_log (event_id)
    WHERE event_id IS NOT NULL;

COMMENT ON TABLE steep_repl.audit_log IS
    'Append-only audit trail: every change to nodes and coordinator_state, and daemon events. Rows leave only through steep_repl.prune_audit().';
ALTER SEQUENCE steep_repl.audit_log_id_seq OWNED BY steep_repl.audit_log.id;
COMMENT ON SEQUENCE steep_repl.audit_log_id_seq IS 'Source of audit_log ids (see next_audit_id()).';
COMMENT ON COLUMN steep_repl.audit_log.id IS 'Monotonic entry id, always from the sequence (set by the trigger audit_log_stamp).';
COMMENT ON COLUMN steep_repl.audit_log.occurred_at IS 'When the audited event happened; never later than the transaction that wrote it.';
COMMENT ON COLUMN steep_repl.audit_log.action IS 'What happened, e.g. node.registered, node.status_changed, coordinator.elected, daemon.started.';
COMMENT ON COLUMN steep_repl.audit_log.actor IS 'Who did it, as role@host: session_user@client address (or local), or the steep_repl.actor setting of a steep_repl_daemon login.';
COMMENT ON COLUMN steep_repl.audit_log.target_type IS 'Kind of object acted on: node, state, daemon, or null.';
COMMENT ON COLUMN steep_repl.audit_log.target_id IS 'Identifier of the object acted on (node_id, state key, ...).';
COMMENT ON COLUMN steep_repl.audit_log.old_value IS 'The value before the change, as jsonb.';
COMMENT ON COLUMN steep_repl.audit_log.new_value IS 'The value after the change, as jsonb.';
COMMENT ON COLUMN steep_repl.audit_log.client_ip IS 'inet_client_addr() of the session that made the change; null for local socket connections.';
COMMENT ON COLUMN steep_repl.audit_log.success IS 'False when the audited operation failed (e.g. peer.auth_failed).';
COMMENT ON COLUMN steep_repl.audit_log.error_message IS 'Why the operation failed, when it did.';
COMMENT ON COLUMN steep_repl.audit_log.event_id IS 'Unique id of a daemon event; makes replays of the daemon''s local spool idempotent.';
COMMENT ON INDEX steep_repl.audit_log_pkey IS 'One row per entry id.';
COMMENT ON INDEX steep_repl.idx_audit_log_occurred_at IS 'Newest-first scans and retention pruning.';
COMMENT ON INDEX steep_repl.idx_audit_log_actor IS 'Finds entries by actor.';
COMMENT ON INDEX steep_repl.idx_audit_log_action IS 'Finds entries by action.';
COMMENT ON INDEX steep_repl.idx_audit_log_target IS 'Finds the history of one object.';
COMMENT ON INDEX steep_repl.idx_audit_log_event_id IS 'Rejects a second copy of the same daemon event.';

-- pg_dump keeps the rows of extension configuration tables.
SELECT pg_catalog.pg_extension_config_dump('steep_repl.nodes', '');
SELECT pg_catalog.pg_extension_config_dump('steep_repl.coordinator_state', '');
SELECT pg_catalog.pg_extension_config_dump('steep_repl.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('steep_repl.audit_log_id_seq', '');
