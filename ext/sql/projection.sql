-- steep_repl projection (since 0.2.0): coordinator_state, the identity
-- columns of nodes and the coordinator flag (nodes.is_coordinator) as this
-- node's projection of the cluster's replicated state (SPEC section 7).
--
-- The cluster's state lives in the daemons' Raft log and snapshots, never
-- here. Each daemon applies the committed entries to its local PostgreSQL
-- through the apply functions below. Each stores the log index it applied in
-- cluster_projection in the same transaction as the change, so an entry
-- applied again (a replay after a restart, a retry after a lost answer)
-- changes nothing and audits nothing. SQL readers see the last applied
-- state: possibly stale, never a source of truth.
--
-- Who may write the projection. coordinator_state and cluster_projection
-- refuse every INSERT, UPDATE, DELETE and TRUNCATE, and nodes refuses every
-- change of is_coordinator (an UPDATE that flips it, an INSERT of a row
-- that has it), all through refuse_projection_write, unless
--   (a) the transaction-local setting steep_repl.applying is 'on' AND the
--       current user is a superuser, for anything but TRUNCATE (which is
--       never allowed: it bypasses the row-level audit). The setting is
--       defined by the library as superuser-only (src/lib.rs) and read
--       through steep_repl.applying(). The apply functions set the flag around
--       their own writes; they are SECURITY DEFINER and owned by the
--       extension's owner, a superuser (the control file says
--       superuser = true), so inside them the current user is that owner.
--       A role that is not a superuser cannot pass by setting the flag
--       itself, even with INSERT/UPDATE/DELETE/TRUNCATE granted on the
--       tables: it has to go through the apply functions, which a DBA grants
--       to the daemon's role only;
--   (b) or a superuser loads rows with COPY ... FROM: restoring a pg_dump
--       (all three are extension configuration tables, so pg_dump writes
--       their rows as COPY). Such rows are audited by the ordinary triggers.
-- What a superuser can still do: anything. Setting steep_repl.applying
-- itself (then its coordinator_state writes and is_coordinator flips pass,
-- unaudited), COPY, ALTER TABLE ... DISABLE TRIGGER, DROP TRIGGER. The
-- refusal stops mistakes and ordinary roles, not a superuser who means it.

------------------------------------------------------------------------------
-- cluster_projection: how far this node's projection has applied the log
------------------------------------------------------------------------------
-- No row is inserted here: the apply functions create it. A row made by the
-- install script would collide with the restored one when a pg_dump is
-- restored (the table's rows are dumped).
CREATE TABLE steep_repl.cluster_projection (
    id               boolean     NOT NULL DEFAULT true,
    cluster_id       text,
    applied_index    bigint      NOT NULL DEFAULT 0,
    applied_term     bigint      NOT NULL DEFAULT 0,
    membership_index bigint,
    coordinator_id   text,
    coordinator_epoch bigint,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cluster_projection_pkey PRIMARY KEY (id),
    CONSTRAINT cluster_projection_single_row CHECK (id),
    CONSTRAINT cluster_projection_cluster_id_not_empty CHECK (cluster_id <> ''),
    CONSTRAINT cluster_projection_applied_index_not_negative CHECK (applied_index >= 0),
    CONSTRAINT cluster_projection_applied_term_not_negative CHECK (applied_term >= 0),
    CONSTRAINT cluster_projection_membership_index_not_negative CHECK (membership_index >= 0),
    CONSTRAINT cluster_projection_coordinator_id_not_empty CHECK (coordinator_id <> ''),
    CONSTRAINT cluster_projection_coordinator_epoch_not_negative CHECK (coordinator_epoch >= 0)
);
COMMENT ON TABLE steep_repl.cluster_projection IS
    'At most one row: the cluster and the Raft log position this node''s projection (coordinator_state, the identity columns of nodes, the coordinator) reflects. Written only by the apply functions; read it with steep_repl.projection().';
COMMENT ON COLUMN steep_repl.cluster_projection.id IS 'Always true: keeps the table to a single row.';
COMMENT ON COLUMN steep_repl.cluster_projection.cluster_id IS 'Id of the cluster whose log was applied; null until the first entry or snapshot is applied.';
COMMENT ON COLUMN steep_repl.cluster_projection.applied_index IS 'Index of the last log entry applied to coordinator_state (0: none); an entry at or below it is not applied again.';
COMMENT ON COLUMN steep_repl.cluster_projection.applied_term IS 'Raft term of the entry at applied_index.';
COMMENT ON COLUMN steep_repl.cluster_projection.membership_index IS 'Index of the membership entry the identity columns of nodes reflect; null until one is applied.';
COMMENT ON COLUMN steep_repl.cluster_projection.coordinator_id IS 'node_id holding the cluster''s coordinator record as last applied by steep_repl.apply_coordinator(); null when nobody holds it or nothing was applied.';
COMMENT ON COLUMN steep_repl.cluster_projection.coordinator_epoch IS 'Epoch of the coordinator record as last applied (grows by one at every grant, never goes back); null until one is applied.';
COMMENT ON COLUMN steep_repl.cluster_projection.updated_at IS 'When the projection last moved.';
COMMENT ON INDEX steep_repl.cluster_projection_pkey IS 'One row at most.';

SELECT pg_catalog.pg_extension_config_dump('steep_repl.cluster_projection', '');

------------------------------------------------------------------------------
-- Only the apply functions write the projection
------------------------------------------------------------------------------
-- Not SECURITY DEFINER: it must see the current user of the statement that
-- fired it (a session's own role, or the owner inside an apply function).
-- Statement-level on coordinator_state and cluster_projection; row-level on
-- nodes, where the triggers' WHEN clauses limit it to changes of
-- is_coordinator. A write let through returns NEW: the row itself for a
-- row-level trigger, null (ignored) for a statement-level one.
CREATE FUNCTION steep_repl.refuse_projection_write() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller_is_superuser boolean :=
        (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user);
BEGIN
    -- TRUNCATE would bypass the row-level audit: refused even here.
    IF caller_is_superuser AND TG_OP <> 'TRUNCATE' AND steep_repl.applying() THEN
        RETURN NEW;
    END IF;
    IF caller_is_superuser AND TG_OP = 'INSERT' AND current_query() ~* '^\s*copy\s' THEN
        RETURN NEW;
    END IF;
    IF TG_TABLE_NAME = 'nodes' THEN
        RAISE EXCEPTION 'steep_repl.nodes.is_coordinator is set only by the cluster''s coordinator record: % of is_coordinator is refused', TG_OP
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The cluster decides the coordinator (a Raft-replicated record of holder and epoch); the steep-repl daemon projects it here with steep_repl.apply_coordinator().',
                  HINT = 'Read the coordinator with steep_repl.projection() (coordinator_id, coordinator_epoch) or SELECT node_id FROM steep_repl.nodes WHERE is_coordinator. Other columns of nodes are not affected.';
    END IF;
    IF TG_TABLE_NAME = 'coordinator_state' THEN
        RAISE EXCEPTION 'steep_repl.coordinator_state is replicated by the cluster: % is refused; use "steep-repl state set KEY VALUE" (or "steep-repl state delete KEY")', TG_OP
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The table is this node''s projection of the cluster''s replicated state; only the steep-repl daemon writes it, as it applies the cluster''s log.',
                  HINT = 'Over IPC: the methods state.set and state.delete. Reading (steep_repl.get_state(), SELECT) works as before.';
    END IF;
    RAISE EXCEPTION 'steep_repl.% is written only by the steep-repl daemon as it applies the cluster''s log: % is refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Read it with steep_repl.projection(); the IPC method cluster.status shows the cluster itself.';
END
$$;
COMMENT ON FUNCTION steep_repl.refuse_projection_write() IS
    'Trigger: refuses INSERT, UPDATE, DELETE and TRUNCATE on coordinator_state and cluster_projection, and changes of nodes.is_coordinator, naming what to use instead, except inside the apply functions (steep_repl.applying() true, current user a superuser; never for TRUNCATE) and a superuser''s COPY FROM (a pg_dump restore).';

CREATE TRIGGER coordinator_state_refuse_direct_write
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON steep_repl.coordinator_state
    FOR EACH STATEMENT EXECUTE FUNCTION steep_repl.refuse_projection_write();
CREATE TRIGGER cluster_projection_refuse_direct_write
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON steep_repl.cluster_projection
    FOR EACH STATEMENT EXECUTE FUNCTION steep_repl.refuse_projection_write();
-- ALWAYS: the refusal also holds with session_replication_role = replica.
ALTER TABLE steep_repl.coordinator_state ENABLE ALWAYS TRIGGER coordinator_state_refuse_direct_write;
ALTER TABLE steep_repl.cluster_projection ENABLE ALWAYS TRIGGER cluster_projection_refuse_direct_write;
COMMENT ON TRIGGER coordinator_state_refuse_direct_write ON steep_repl.coordinator_state IS
    'Refuses writes other than the apply functions'': the state is replicated by the cluster (steep-repl state set).';
COMMENT ON TRIGGER cluster_projection_refuse_direct_write ON steep_repl.cluster_projection IS
    'Refuses writes other than the apply functions''.';

-- Two triggers: a WHEN clause of an INSERT trigger cannot name OLD. The
-- unique index idx_nodes_coordinator still holds whoever writes.
CREATE TRIGGER nodes_coordinator_refuse_direct_insert
    BEFORE INSERT ON steep_repl.nodes
    FOR EACH ROW WHEN (NEW.is_coordinator)
    EXECUTE FUNCTION steep_repl.refuse_projection_write();
CREATE TRIGGER nodes_coordinator_refuse_direct_update
    BEFORE UPDATE OF is_coordinator ON steep_repl.nodes
    FOR EACH ROW WHEN (OLD.is_coordinator IS DISTINCT FROM NEW.is_coordinator)
    EXECUTE FUNCTION steep_repl.refuse_projection_write();
ALTER TABLE steep_repl.nodes ENABLE ALWAYS TRIGGER nodes_coordinator_refuse_direct_insert;
ALTER TABLE steep_repl.nodes ENABLE ALWAYS TRIGGER nodes_coordinator_refuse_direct_update;
COMMENT ON TRIGGER nodes_coordinator_refuse_direct_insert ON steep_repl.nodes IS
    'Refuses a new row that claims the coordinator flag, except from the apply functions: the cluster''s coordinator record decides it (steep_repl.apply_coordinator()).';
COMMENT ON TRIGGER nodes_coordinator_refuse_direct_update ON steep_repl.nodes IS
    'Refuses a change of is_coordinator, except from the apply functions: the cluster''s coordinator record decides it (steep_repl.apply_coordinator()).';

------------------------------------------------------------------------------
-- Internal helpers
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.check_log_position(fn text, p_cluster_id text, p_log_index bigint, p_log_term bigint)
RETURNS void
    LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_cluster_id IS NULL OR p_cluster_id = '' THEN
        RAISE EXCEPTION '%: p_cluster_id must not be empty', fn
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_log_index IS NULL OR p_log_index < 0 THEN
        RAISE EXCEPTION '%: p_log_index must be 0 or more (got %)', fn, COALESCE(p_log_index::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_log_term IS NULL OR p_log_term < 0 THEN
        RAISE EXCEPTION '%: p_log_term must be 0 or more (got %)', fn, COALESCE(p_log_term::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.check_log_position(text, text, bigint, bigint) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.check_log_position(text, text, bigint, bigint) IS
    'Internal: raises invalid_parameter_value naming the calling function when a cluster id is empty or a log index or term is negative.';

-- Callers set steep_repl.applying first (the row is written here).
CREATE FUNCTION steep_repl.lock_projection() RETURNS steep_repl.cluster_projection
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result steep_repl.cluster_projection;
BEGIN
    INSERT INTO steep_repl.cluster_projection (id) VALUES (true)
    ON CONFLICT ON CONSTRAINT cluster_projection_pkey DO NOTHING;
    SELECT * INTO result FROM steep_repl.cluster_projection p WHERE p.id FOR UPDATE;
    RETURN result;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.lock_projection() FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.lock_projection() IS
    'Internal: creates the cluster_projection row when missing and locks it for the rest of the transaction, so appliers of the log take turns. Returns it.';

-- Callers set steep_repl.applying first.
CREATE FUNCTION steep_repl.claim_log_index(fn text, p_cluster_id text, p_log_index bigint, p_log_term bigint)
RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    stored steep_repl.cluster_projection := steep_repl.lock_projection();
BEGIN
    IF stored.cluster_id IS NOT NULL AND stored.cluster_id <> p_cluster_id THEN
        RAISE EXCEPTION '%: this projection holds cluster %, not %', fn, quote_literal(stored.cluster_id), quote_literal(p_cluster_id)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Install a snapshot of the new cluster first with steep_repl.apply_state_snapshot().';
    END IF;
    IF p_log_index <= stored.applied_index THEN
        RETURN false;
    END IF;
    UPDATE steep_repl.cluster_projection p
       SET cluster_id = p_cluster_id, applied_index = p_log_index, applied_term = p_log_term, updated_at = now()
     WHERE p.id;
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.claim_log_index(text, text, bigint, bigint) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.claim_log_index(text, text, bigint, bigint) IS
    'Internal: records that the entry at p_log_index is applied and returns true, or returns false when the projection is already at or past it; refuses an entry of another cluster.';

CREATE FUNCTION steep_repl.log_event_id(p_cluster_id text, p_log_index bigint) RETURNS uuid
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    -- The first 128 bits of SHA-256, marked as an RFC 9562 version 8 UUID.
    SELECT overlay(overlay(substr(encode(sha256(convert_to('steep_repl:' || p_cluster_id || ':' || p_log_index::text, 'UTF8')), 'hex'), 1, 32)
                           PLACING '8' FROM 13 FOR 1)
                   PLACING '8' FROM 17 FOR 1)::uuid
$$;
REVOKE ALL ON FUNCTION steep_repl.log_event_id(text, bigint) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.log_event_id(text, bigint) IS
    'The audit_log.event_id of the audit row of the log entry at p_log_index of cluster p_cluster_id: the same on every node, and a second row for the same entry is refused by idx_audit_log_event_id.';

------------------------------------------------------------------------------
-- Applying the log
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.apply_state(
    p_cluster_id text,
    p_log_index  bigint,
    p_log_term   bigint,
    p_key        text,
    p_value      jsonb,
    p_deleted    boolean,
    p_actor      text,
    p_client_ip  inet,
    p_request_id text
) RETURNS boolean
    LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.apply_state';
    before_row steep_repl.coordinator_state;
    after_row steep_repl.coordinator_state;
    had_row boolean;
BEGIN
    PERFORM steep_repl.check_log_position(fn, p_cluster_id, p_log_index, p_log_term);
    IF p_key IS NULL OR p_key !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' THEN
        RAISE EXCEPTION '%: p_key must be a dotted name such as cluster.version (got %)',
                fn, COALESCE(quote_literal(p_key), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_deleted IS NULL THEN
        RAISE EXCEPTION '%: p_deleted must not be NULL', fn
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT p_deleted AND p_value IS NULL THEN
        RAISE EXCEPTION '%: p_value must not be NULL unless p_deleted is true', fn
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A JSON null is the value ''null''::jsonb.';
    END IF;
    IF p_actor IS NULL OR p_actor NOT LIKE '_%@_%' THEN
        RAISE EXCEPTION '%: p_actor must have the form role@host (got %)',
                fn, COALESCE(quote_literal(p_actor), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM set_config('steep_repl.applying', 'on', true);
    IF NOT steep_repl.claim_log_index(fn, p_cluster_id, p_log_index, p_log_term) THEN
        PERFORM set_config('steep_repl.applying', 'off', true);
        RETURN false;
    END IF;

    SELECT * INTO before_row FROM steep_repl.coordinator_state s WHERE s.key = p_key FOR UPDATE;
    had_row := FOUND;
    IF p_deleted THEN
        DELETE FROM steep_repl.coordinator_state s WHERE s.key = p_key;
    ELSE
        INSERT INTO steep_repl.coordinator_state AS s (key, value)
        VALUES (p_key, p_value)
        ON CONFLICT ON CONSTRAINT coordinator_state_pkey DO UPDATE
            SET value = EXCLUDED.value
        RETURNING s.* INTO after_row;
    END IF;

    -- The one audit row of this entry (the trigger stays silent while
    -- steep_repl.applying is on). Its event_id names the entry, so even a
    -- projection whose index was lost writes no second row for it.
    INSERT INTO steep_repl.audit_log AS a
        (action, actor, target_type, target_id, old_value, new_value, client_ip, event_id)
    VALUES ('state.updated', p_actor, 'state', p_key,
            CASE WHEN had_row THEN to_jsonb(before_row) END,
            CASE WHEN NOT p_deleted THEN
                to_jsonb(after_row) || jsonb_build_object('log', jsonb_build_object(
                    'cluster_id', p_cluster_id, 'index', p_log_index, 'term', p_log_term,
                    'request_id', p_request_id))
            END,
            p_client_ip,
            steep_repl.log_event_id(p_cluster_id, p_log_index))
    ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING;

    PERFORM set_config('steep_repl.applying', 'off', true);
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.apply_state(text, bigint, bigint, text, jsonb, boolean, text, inet, text) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.apply_state(text, bigint, bigint, text, jsonb, boolean, text, inet, text) IS
    'Daemon only: applies the committed log entry p_log_index (term p_log_term) of cluster p_cluster_id that sets p_key to p_value, or deletes it when p_deleted, and records the index, in one transaction. Writes exactly one audit row: state.updated, actor p_actor, client_ip p_client_ip, target state/p_key, old_value the previous row (null when absent), new_value the new row plus "log": {cluster_id, index, term, request_id} (null for a delete), event_id steep_repl.log_event_id(p_cluster_id, p_log_index). Returns false and writes nothing when the projection is already at or past p_log_index (a replay). A projection that holds no cluster yet adopts p_cluster_id; one that holds another cluster is refused (install a snapshot first).';

-- The same as apply_state for a run of consecutive entries, in one call:
-- the projector hands over what was applied since its last pass (many
-- entries under a steady write load) instead of one call per entry. Set
-- based: one audit insert for the run, then the last value of each key.
CREATE FUNCTION steep_repl.state_batch_entries(p_entries jsonb, p_after bigint)
RETURNS TABLE (ord bigint, log_index bigint, log_term bigint, key text, deleted boolean,
               value jsonb, actor text, client_ip inet, request_id text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.ord, (t.x->>'index')::bigint, (t.x->>'term')::bigint, t.x->>'key',
           (t.x->>'deleted')::boolean, t.x->'value', t.x->>'actor',
           (t.x->>'client_ip')::inet, t.x->>'request_id'
      FROM jsonb_array_elements(p_entries) WITH ORDINALITY AS t(x, ord)
     WHERE (t.x->>'index')::bigint > p_after
$$;
REVOKE ALL ON FUNCTION steep_repl.state_batch_entries(jsonb, bigint) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.state_batch_entries(jsonb, bigint) IS
    'Internal: the entries of a steep_repl.apply_state_batch() argument after log index p_after, as rows, in their order (ord).';

CREATE FUNCTION steep_repl.apply_state_batch(p_cluster_id text, p_entries jsonb) RETURNS integer
    LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.apply_state_batch';
    stored steep_repl.cluster_projection;
    item record;
    previous bigint := -1;
    last_index bigint;
    last_term bigint;
    applied integer;
BEGIN
    PERFORM steep_repl.check_log_position(fn, p_cluster_id, 0, 0);
    IF p_entries IS NULL OR jsonb_typeof(p_entries) <> 'array' THEN
        RAISE EXCEPTION '%: p_entries must be a JSON array of entries (got %)',
                fn, COALESCE(jsonb_typeof(p_entries), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Every entry is checked before anything is written: the whole run
    -- is applied or none of it.
    FOR item IN SELECT t.ord, t.x FROM jsonb_array_elements(p_entries) WITH ORDINALITY AS t(x, ord) LOOP
        IF jsonb_typeof(item.x) <> 'object'
           OR jsonb_typeof(item.x->'index') IS DISTINCT FROM 'number'
           OR jsonb_typeof(item.x->'term') IS DISTINCT FROM 'number'
           OR (item.x->>'index') !~ '^[0-9]+$' OR (item.x->>'term') !~ '^[0-9]+$' THEN
            RAISE EXCEPTION '%: p_entries[%] must be an object with a whole index and term of 0 or more (got %)',
                    fn, item.ord, item.x
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF (item.x->>'index')::bigint <= previous THEN
            RAISE EXCEPTION '%: p_entries[%].index % does not follow the previous entry''s %',
                    fn, item.ord, item.x->>'index', previous
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        previous := (item.x->>'index')::bigint;
        IF (item.x->>'key') IS NULL OR (item.x->>'key') !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' THEN
            RAISE EXCEPTION '%: p_entries[%].key must be a dotted name such as cluster.version (got %)',
                    fn, item.ord, COALESCE(quote_literal(item.x->>'key'), 'null')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF jsonb_typeof(item.x->'deleted') IS DISTINCT FROM 'boolean' THEN
            RAISE EXCEPTION '%: p_entries[%].deleted must be true or false', fn, item.ord
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NOT (item.x->>'deleted')::boolean AND NOT item.x ? 'value' THEN
            RAISE EXCEPTION '%: p_entries[%].value is missing and the entry does not delete its key', fn, item.ord
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A JSON null is the value null.';
        END IF;
        IF (item.x->>'actor') IS NULL OR (item.x->>'actor') NOT LIKE '_%@_%' THEN
            RAISE EXCEPTION '%: p_entries[%].actor must have the form role@host (got %)',
                    fn, item.ord, COALESCE(quote_literal(item.x->>'actor'), 'null')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF (item.x->>'client_ip') IS NOT NULL AND (item.x->>'client_ip') !~ '^[0-9A-Fa-f.:/]+$' THEN
            RAISE EXCEPTION '%: p_entries[%].client_ip must be an IP address (got %)',
                    fn, item.ord, quote_literal(item.x->>'client_ip')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;

    PERFORM set_config('steep_repl.applying', 'on', true);
    stored := steep_repl.lock_projection();
    IF stored.cluster_id IS NOT NULL AND stored.cluster_id <> p_cluster_id THEN
        RAISE EXCEPTION '%: this projection holds cluster %, not %', fn, quote_literal(stored.cluster_id), quote_literal(p_cluster_id)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Install a snapshot of the new cluster first with steep_repl.apply_state_snapshot().';
    END IF;

    -- One audit row per entry, as apply_state writes it: the row before
    -- (from the table for a key's first entry of the run, else from the
    -- previous entry of that key) and the row after.
    INSERT INTO steep_repl.audit_log AS a
        (action, actor, target_type, target_id, old_value, new_value, client_ip, event_id)
    SELECT 'state.updated', e.actor, 'state', e.key,
           CASE WHEN e.prev_ord IS NULL THEN
                    (SELECT to_jsonb(s) FROM steep_repl.coordinator_state s WHERE s.key = e.key)
                WHEN e.prev_deleted THEN NULL
                ELSE jsonb_build_object('key', e.key, 'value', e.prev_value, 'updated_at', now())
           END,
           CASE WHEN NOT e.deleted THEN
                jsonb_build_object('key', e.key, 'value', e.value, 'updated_at', now(),
                    'log', jsonb_build_object('cluster_id', p_cluster_id, 'index', e.log_index,
                                              'term', e.log_term, 'request_id', e.request_id))
           END,
           e.client_ip, steep_repl.log_event_id(p_cluster_id, e.log_index)
      FROM (SELECT b.*, lag(b.ord) OVER w AS prev_ord, lag(b.deleted) OVER w AS prev_deleted,
                   lag(b.value) OVER w AS prev_value
              FROM steep_repl.state_batch_entries(p_entries, stored.applied_index) b
            WINDOW w AS (PARTITION BY b.key ORDER BY b.ord)) e
     ORDER BY e.ord
    ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING;
    GET DIAGNOSTICS applied = ROW_COUNT;

    -- The table gets the last value of each key.
    DELETE FROM steep_repl.coordinator_state s
     USING (SELECT DISTINCT ON (b.key) b.key, b.deleted
              FROM steep_repl.state_batch_entries(p_entries, stored.applied_index) b
             ORDER BY b.key, b.ord DESC) l
     WHERE s.key = l.key AND l.deleted;
    INSERT INTO steep_repl.coordinator_state AS s (key, value)
    SELECT l.key, l.value
      FROM (SELECT DISTINCT ON (b.key) b.key, b.deleted, b.value
              FROM steep_repl.state_batch_entries(p_entries, stored.applied_index) b
             ORDER BY b.key, b.ord DESC) l
     WHERE NOT l.deleted
    ON CONFLICT ON CONSTRAINT coordinator_state_pkey DO UPDATE SET value = EXCLUDED.value;

    SELECT b.log_index, b.log_term INTO last_index, last_term
      FROM steep_repl.state_batch_entries(p_entries, stored.applied_index) b
     ORDER BY b.ord DESC LIMIT 1;
    IF FOUND THEN
        UPDATE steep_repl.cluster_projection p
           SET cluster_id = p_cluster_id, applied_index = last_index, applied_term = last_term, updated_at = now()
         WHERE p.id;
    END IF;
    PERFORM set_config('steep_repl.applying', 'off', true);
    RETURN COALESCE(applied, 0);
END
$$;
REVOKE ALL ON FUNCTION steep_repl.apply_state_batch(text, jsonb) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.apply_state_batch(text, jsonb) IS
    'Daemon only: applies a run of consecutive committed log entries of cluster p_cluster_id that set or delete keys, in one transaction, exactly as steep_repl.apply_state() would one after the other (the same rows, the same audit rows). p_entries is a JSON array, in log order, of {index, term, key, deleted, value (unless deleted), actor, client_ip (or null), request_id (or null)}. Entries at or below the applied index are skipped (a replay). Every entry is checked first; a bad one is refused naming its position and nothing is written. Returns the number of audit rows written.';

CREATE FUNCTION steep_repl.apply_state_snapshot(
    p_cluster_id text,
    p_log_index  bigint,
    p_log_term   bigint,
    p_state      jsonb
) RETURNS boolean
    LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.apply_state_snapshot';
    stored steep_repl.cluster_projection;
    bad_key text;
    keys_before bigint;
BEGIN
    PERFORM steep_repl.check_log_position(fn, p_cluster_id, p_log_index, p_log_term);
    IF p_state IS NULL OR jsonb_typeof(p_state) <> 'object' THEN
        RAISE EXCEPTION '%: p_state must be a JSON object of key -> value (got %)',
                fn, COALESCE(jsonb_typeof(p_state), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT k INTO bad_key FROM jsonb_object_keys(p_state) AS k
     WHERE k !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' ORDER BY k LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: p_state key % is not a dotted name such as cluster.version', fn, quote_literal(bad_key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM set_config('steep_repl.applying', 'on', true);
    stored := steep_repl.lock_projection();
    -- A snapshot of the same cluster must be newer; the first one, or one of
    -- another cluster (cluster force-new), replaces everything whatever its
    -- index (0 too: the empty map a node that applies the whole log from its
    -- first entry starts from).
    IF stored.cluster_id = p_cluster_id AND p_log_index <= stored.applied_index THEN
        PERFORM set_config('steep_repl.applying', 'off', true);
        RETURN false;
    END IF;

    SELECT count(*) INTO keys_before FROM steep_repl.coordinator_state;
    DELETE FROM steep_repl.coordinator_state s WHERE NOT (p_state ? s.key);
    INSERT INTO steep_repl.coordinator_state AS s (key, value)
    SELECT e.key, e.value FROM jsonb_each(p_state) AS e
    ON CONFLICT ON CONSTRAINT coordinator_state_pkey DO UPDATE
        SET value = EXCLUDED.value
        WHERE s.value IS DISTINCT FROM EXCLUDED.value;
    UPDATE steep_repl.cluster_projection p
       SET cluster_id = p_cluster_id, applied_index = p_log_index, applied_term = p_log_term,
           -- Another cluster's membership is not this one's.
           membership_index = CASE WHEN stored.cluster_id IS DISTINCT FROM p_cluster_id
                                   THEN NULL ELSE p.membership_index END,
           -- Nor is its coordinator: apply_coordinator() brings the new one.
           coordinator_id = CASE WHEN stored.cluster_id IS DISTINCT FROM p_cluster_id
                                 THEN NULL ELSE p.coordinator_id END,
           coordinator_epoch = CASE WHEN stored.cluster_id IS DISTINCT FROM p_cluster_id
                                    THEN NULL ELSE p.coordinator_epoch END,
           updated_at = now()
     WHERE p.id;
    IF stored.cluster_id IS DISTINCT FROM p_cluster_id THEN
        UPDATE steep_repl.nodes n SET is_coordinator = false WHERE n.is_coordinator;
    END IF;

    -- One row for the install; the entries it covers are not audited again.
    PERFORM steep_repl.write_audit('state.updated', 'state', NULL,
        jsonb_build_object('cluster_id', stored.cluster_id, 'applied_index', stored.applied_index,
                           'applied_term', stored.applied_term, 'keys', keys_before),
        jsonb_build_object('snapshot', jsonb_build_object(
            'cluster_id', p_cluster_id, 'index', p_log_index, 'term', p_log_term,
            'keys', (SELECT count(*) FROM jsonb_object_keys(p_state)))));

    PERFORM set_config('steep_repl.applying', 'off', true);
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.apply_state_snapshot(text, bigint, bigint, jsonb) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.apply_state_snapshot(text, bigint, bigint, jsonb) IS
    'Daemon only: makes coordinator_state equal p_state (a JSON object of key -> value) as of log entry p_log_index (term p_log_term) of cluster p_cluster_id and records the index, in one transaction; used when a node installs a snapshot or its projection fell behind the log. Unchanged keys keep their updated_at. Writes one audit row for the install (state.updated, target_id null, old_value {cluster_id, applied_index, applied_term, keys}, new_value {"snapshot": {cluster_id, index, term, keys}}, the session''s actor) and none per key. Returns false and writes nothing when the projection of the same cluster is already at or past p_log_index; the first snapshot (a projection of no cluster yet) is installed at any index, 0 included, and a snapshot of another cluster is always installed, and clears the coordinator (coordinator_id, coordinator_epoch, nodes.is_coordinator) until steep_repl.apply_coordinator() applies the new cluster''s.';

CREATE FUNCTION steep_repl.advance_projection(p_cluster_id text, p_log_index bigint, p_log_term bigint)
RETURNS boolean
    LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.advance_projection';
    moved boolean;
BEGIN
    PERFORM steep_repl.check_log_position(fn, p_cluster_id, p_log_index, p_log_term);
    PERFORM set_config('steep_repl.applying', 'on', true);
    moved := steep_repl.claim_log_index(fn, p_cluster_id, p_log_index, p_log_term);
    PERFORM set_config('steep_repl.applying', 'off', true);
    RETURN moved;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.advance_projection(text, bigint, bigint) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.advance_projection(text, bigint, bigint) IS
    'Daemon only: records that the log of cluster p_cluster_id is applied up to p_log_index (term p_log_term) with nothing to write to coordinator_state or the coordinator (membership and blank entries, a compare-and-set that failed, a coordinator renewal or a coordinator command the cluster refused). Returns false when the projection is already at or past it; refuses another cluster''s entry like apply_state().';

------------------------------------------------------------------------------
-- Applying the membership
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.member_integer(fn text, i bigint, member jsonb, field text, low integer, high integer)
RETURNS integer
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v jsonb := member -> field;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN NULL;
    END IF;
    -- Nested: the casts below only make sense for a number.
    IF jsonb_typeof(v) = 'number' THEN
        IF v::numeric = trunc(v::numeric) AND v::numeric BETWEEN low AND high THEN
            RETURN v::integer;
        END IF;
    END IF;
    RAISE EXCEPTION '%: p_members[%].% must be an integer between % and % (got %)', fn, i, field, low, high, v::text
        USING ERRCODE = 'invalid_parameter_value';
END
$$;
REVOKE ALL ON FUNCTION steep_repl.member_integer(text, bigint, jsonb, text, integer, integer) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.member_integer(text, bigint, jsonb, text, integer, integer) IS
    'Internal: the integer field of a member object for apply_membership(), NULL when absent; raises invalid_parameter_value naming the member and field when it is not an integer within bounds.';

CREATE FUNCTION steep_repl.member_text(fn text, i bigint, member jsonb, field text)
RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v jsonb := member -> field;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(v) <> 'string' OR v #>> '{}' = '' THEN
        RAISE EXCEPTION '%: p_members[%].% must be a non-empty string (got %)', fn, i, field, v::text
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN v #>> '{}';
END
$$;
REVOKE ALL ON FUNCTION steep_repl.member_text(text, bigint, jsonb, text) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.member_text(text, bigint, jsonb, text) IS
    'Internal: the string field of a member object for apply_membership(), NULL when absent; raises invalid_parameter_value naming the member and field when it is not a non-empty string.';

CREATE FUNCTION steep_repl.apply_membership(p_log_index bigint, p_members jsonb) RETURNS integer
    LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.apply_membership';
    stored steep_repl.cluster_projection;
    m record;
    ids text[] := '{}';
    names text[] := '{}';
    hosts text[] := '{}';
    ports integer[] := '{}';
    priorities integer[] := '{}';
    grpc_hosts text[] := '{}';
    grpc_ports integer[] := '{}';
    roles text[] := '{}';
    member_id text;
    member_grpc_host text;
    member_grpc_port integer;
    member_priority integer;
    member_role text;
    rows_changed integer;
    changed integer := 0;
BEGIN
    IF p_log_index IS NULL OR p_log_index < 0 THEN
        RAISE EXCEPTION '%: p_log_index must be 0 or more (got %)', fn, COALESCE(p_log_index::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_members IS NULL OR jsonb_typeof(p_members) <> 'array' OR jsonb_array_length(p_members) = 0 THEN
        RAISE EXCEPTION '%: p_members must be a non-empty JSON array of members', fn
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    FOR m IN SELECT e.member, e.n - 1 AS i
               FROM jsonb_array_elements(p_members) WITH ORDINALITY AS e (member, n) LOOP
        IF jsonb_typeof(m.member) <> 'object' THEN
            RAISE EXCEPTION '%: p_members[%] must be a JSON object', fn, m.i
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        member_id := steep_repl.member_text(fn, m.i, m.member, 'node_id');
        IF member_id IS NULL THEN
            RAISE EXCEPTION '%: p_members[%].node_id must not be empty', fn, m.i
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF member_id = ANY (ids) THEN
            RAISE EXCEPTION '%: p_members[%].node_id % appears twice', fn, m.i, quote_literal(member_id)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        member_grpc_host := steep_repl.member_text(fn, m.i, m.member, 'grpc_host');
        member_grpc_port := steep_repl.member_integer(fn, m.i, m.member, 'grpc_port', 1, 65535);
        member_priority := steep_repl.member_integer(fn, m.i, m.member, 'priority', 1, 100);
        member_role := steep_repl.member_text(fn, m.i, m.member, 'role');
        IF member_grpc_host IS NULL THEN
            RAISE EXCEPTION '%: p_members[%].grpc_host must not be empty', fn, m.i
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF member_grpc_port IS NULL THEN
            RAISE EXCEPTION '%: p_members[%].grpc_port must be an integer between 1 and 65535 (got null)', fn, m.i
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF member_priority IS NULL THEN
            RAISE EXCEPTION '%: p_members[%].priority must be an integer between 1 and 100 (got null)', fn, m.i
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF member_role IS NULL OR member_role NOT IN ('data', 'witness') THEN
            RAISE EXCEPTION '%: p_members[%].role must be data or witness (got %)',
                    fn, m.i, COALESCE(quote_literal(member_role), 'null')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        ids := ids || member_id;
        names := names || COALESCE(steep_repl.member_text(fn, m.i, m.member, 'node_name'), member_id);
        -- A witness has no PostgreSQL: without a host its row names the
        -- machine by its gRPC host (nodes.host is never empty).
        hosts := hosts || COALESCE(steep_repl.member_text(fn, m.i, m.member, 'host'), member_grpc_host);
        ports := ports || COALESCE(steep_repl.member_integer(fn, m.i, m.member, 'port', 1, 65535), 5432);
        priorities := priorities || member_priority;
        grpc_hosts := grpc_hosts || member_grpc_host;
        grpc_ports := grpc_ports || member_grpc_port;
        roles := roles || member_role;
    END LOOP;

    PERFORM set_config('steep_repl.applying', 'on', true);
    stored := steep_repl.lock_projection();
    IF p_log_index <= stored.membership_index THEN
        PERFORM set_config('steep_repl.applying', 'off', true);
        RETURN 0;
    END IF;

    DELETE FROM steep_repl.nodes n WHERE n.node_id <> ALL (ids);
    GET DIAGNOSTICS rows_changed = ROW_COUNT;
    changed := changed + rows_changed;

    -- Status and last_seen are each node's own observation and stay as they
    -- are; so does the coordinator flag of a known row (apply_coordinator()
    -- keeps it). A new row is the coordinator when it is the holder already
    -- applied: a membership applied after the grant that names its holder.
    INSERT INTO steep_repl.nodes AS n
        (node_id, node_name, host, port, priority, grpc_host, grpc_port, role, is_coordinator)
    SELECT u.*, COALESCE(u.node_id = stored.coordinator_id, false)
      FROM unnest(ids, names, hosts, ports, priorities, grpc_hosts, grpc_ports, roles)
           AS u (node_id, node_name, host, port, priority, grpc_host, grpc_port, role)
    ON CONFLICT ON CONSTRAINT nodes_pkey DO UPDATE
        SET node_name = EXCLUDED.node_name,
            host      = EXCLUDED.host,
            port      = EXCLUDED.port,
            priority  = EXCLUDED.priority,
            grpc_host = EXCLUDED.grpc_host,
            grpc_port = EXCLUDED.grpc_port,
            role      = EXCLUDED.role
        WHERE (n.node_name, n.host, n.port, n.priority, n.grpc_host, n.grpc_port, n.role)
              IS DISTINCT FROM
              (EXCLUDED.node_name, EXCLUDED.host, EXCLUDED.port, EXCLUDED.priority,
               EXCLUDED.grpc_host, EXCLUDED.grpc_port, EXCLUDED.role);
    GET DIAGNOSTICS rows_changed = ROW_COUNT;
    changed := changed + rows_changed;

    UPDATE steep_repl.cluster_projection p
       SET membership_index = p_log_index, updated_at = now()
     WHERE p.id;
    PERFORM set_config('steep_repl.applying', 'off', true);
    RETURN changed;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.apply_membership(bigint, jsonb) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.apply_membership(bigint, jsonb) IS
    'Daemon only: makes the identity columns of nodes (node_id, node_name, host, port, priority, grpc_host, grpc_port, role) equal the cluster membership of log entry p_log_index. p_members is a JSON array of {node_id, node_name?, grpc_host, grpc_port, host?, port?, priority, role: data|witness}; node_name defaults to node_id, host to grpc_host (a witness has no PostgreSQL: its host/port then only name the machine), port to 5432. Inserts and updates members, deletes the rows of nodes that are no longer members; status, last_seen and is_coordinator are kept (a new row is the coordinator when it is the holder steep_repl.apply_coordinator() applied). Each change is audited by the nodes trigger (node.registered, node.updated, node.removed). Returns the number of rows changed; 0 and nothing written when a membership at or past p_log_index was already applied.';

------------------------------------------------------------------------------
-- Applying the coordinator
------------------------------------------------------------------------------
-- The cluster decides the coordinator: a replicated record of its holder
-- (a node_id or nobody) and an epoch that grows by one at every grant. Here
-- it is projected into cluster_projection (coordinator_id,
-- coordinator_epoch) and nodes.is_coordinator, which only this function
-- and the other apply functions change (refuse_projection_write).
CREATE FUNCTION steep_repl.apply_coordinator(
    p_cluster_id      text,
    p_log_index       bigint,
    p_log_term        bigint,
    p_holder          text,
    p_epoch           bigint,
    p_previous_holder text,
    p_method          text,
    p_actor           text
) RETURNS boolean
    LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.apply_coordinator';
    audit_action constant text := CASE p_method
        WHEN 'coordinator.grant' THEN 'coordinator.elected'
        WHEN 'coordinator.release' THEN 'coordinator.released'
        WHEN 'coordinator.handover' THEN 'coordinator.handover_requested'
    END;
    stored steep_repl.cluster_projection;
BEGIN
    PERFORM steep_repl.check_log_position(fn, p_cluster_id, p_log_index, p_log_term);
    IF audit_action IS NULL AND p_method IS DISTINCT FROM 'snapshot' THEN
        RAISE EXCEPTION '%: p_method must be coordinator.grant, coordinator.release, coordinator.handover or snapshot (got %)',
                fn, COALESCE(quote_literal(p_method), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A renewal, or a command the cluster refused, changes neither holder nor epoch: record its index with steep_repl.advance_projection().';
    END IF;
    IF p_holder = '' THEN
        RAISE EXCEPTION '%: p_holder must be a node_id or NULL (nobody)', fn
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_previous_holder = '' THEN
        RAISE EXCEPTION '%: p_previous_holder must be a node_id or NULL (nobody)', fn
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_holder IS NULL AND p_method IN ('coordinator.grant', 'coordinator.handover') THEN
        RAISE EXCEPTION '%: p_holder must not be NULL for %', fn, p_method
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_holder IS NOT NULL AND p_method = 'coordinator.release' THEN
        RAISE EXCEPTION '%: p_holder must be NULL for coordinator.release (got %)', fn, quote_literal(p_holder)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_epoch IS NULL OR p_epoch < 0 THEN
        RAISE EXCEPTION '%: p_epoch must be 0 or more (got %)', fn, COALESCE(p_epoch::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_actor IS NULL OR p_actor NOT LIKE '_%@_%' THEN
        RAISE EXCEPTION '%: p_actor must have the form role@host (got %)',
                fn, COALESCE(quote_literal(p_actor), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM set_config('steep_repl.applying', 'on', true);
    stored := steep_repl.lock_projection();
    IF p_method = 'snapshot' THEN
        -- The snapshot's state is installed first (apply_state_snapshot()
        -- records its index), then its coordinator at the same index.
        IF stored.cluster_id IS DISTINCT FROM p_cluster_id OR p_log_index > stored.applied_index THEN
            RAISE EXCEPTION '%: the snapshot of cluster % at log index % is not installed (this projection holds cluster % at log index %)',
                    fn, quote_literal(p_cluster_id), p_log_index,
                    COALESCE(quote_literal(stored.cluster_id), 'none'), stored.applied_index
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Install the snapshot''s state with steep_repl.apply_state_snapshot() first, then its coordinator.';
        END IF;
        IF p_log_index < stored.applied_index THEN
            PERFORM set_config('steep_repl.applying', 'off', true);
            RETURN false;
        END IF;
    ELSIF NOT steep_repl.claim_log_index(fn, p_cluster_id, p_log_index, p_log_term) THEN
        -- A replay: before the epoch checks, so an old entry is skipped
        -- whatever epoch it carries.
        PERFORM set_config('steep_repl.applying', 'off', true);
        RETURN false;
    END IF;

    -- The checks below raise: the whole transaction, the claimed index
    -- included, rolls back.
    IF p_epoch < stored.coordinator_epoch THEN
        RAISE EXCEPTION '%: epoch % is older than the applied coordinator epoch % (% of %): an epoch never goes back',
                fn, p_epoch, stored.coordinator_epoch, COALESCE(quote_literal(stored.coordinator_id), 'nobody'),
                quote_literal(stored.cluster_id)
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- One holder per epoch: a grant takes a new one (the same grant again,
    -- with its index lost, changes nothing).
    IF p_method = 'coordinator.grant' AND p_epoch = stored.coordinator_epoch
       AND p_holder IS DISTINCT FROM stored.coordinator_id THEN
        RAISE EXCEPTION '%: coordinator.grant of epoch % to % is refused: that epoch is already applied with holder %',
                fn, p_epoch, quote_literal(p_holder), COALESCE(quote_literal(stored.coordinator_id), 'nobody')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Every grant takes a new epoch (the applied one plus one).';
    END IF;
    IF p_method = 'snapshot'
       AND (stored.coordinator_id, stored.coordinator_epoch) IS NOT DISTINCT FROM (p_holder, p_epoch)
       AND NOT EXISTS (SELECT 1 FROM steep_repl.nodes n
                        WHERE n.is_coordinator IS DISTINCT FROM ((n.node_id = p_holder) IS TRUE)) THEN
        PERFORM set_config('steep_repl.applying', 'off', true);
        RETURN false;
    END IF;

    UPDATE steep_repl.cluster_projection p
       SET coordinator_id = p_holder, coordinator_epoch = p_epoch, updated_at = now()
     WHERE p.id;
    -- Two statements: the unique partial index idx_nodes_coordinator is
    -- checked row by row, so the old flag is cleared before the new one is
    -- set. The nodes trigger leaves these flips unaudited (steep_repl.applying
    -- is on): the row below is the one audit of the entry. A holder that is
    -- not a row of nodes yet gets its flag when its membership is applied.
    UPDATE steep_repl.nodes n SET is_coordinator = false
     WHERE n.is_coordinator AND n.node_id IS DISTINCT FROM p_holder;
    UPDATE steep_repl.nodes n SET is_coordinator = true
     WHERE n.node_id = p_holder AND NOT n.is_coordinator;

    IF audit_action IS NOT NULL THEN
        -- Its event_id names the entry, so even a projection whose index was
        -- lost writes no second row for it.
        INSERT INTO steep_repl.audit_log AS a
            (action, actor, target_type, target_id, old_value, new_value, client_ip, event_id)
        VALUES (audit_action, p_actor, 'node', COALESCE(p_holder, p_previous_holder),
                jsonb_build_object('holder', stored.coordinator_id, 'epoch', stored.coordinator_epoch),
                jsonb_build_object('holder', p_holder, 'epoch', p_epoch, 'previous', p_previous_holder,
                                   'cluster_id', p_cluster_id, 'log_index', p_log_index, 'log_term', p_log_term),
                NULL,
                steep_repl.log_event_id(p_cluster_id, p_log_index))
        ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING;
    END IF;

    PERFORM set_config('steep_repl.applying', 'off', true);
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.apply_coordinator(text, bigint, bigint, text, bigint, text, text, text) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.apply_coordinator(text, bigint, bigint, text, bigint, text, text, text) IS
    'Daemon only: applies the coordinator record of log entry p_log_index (term p_log_term) of cluster p_cluster_id: holder p_holder (NULL: nobody) under epoch p_epoch. Stores both in cluster_projection (coordinator_id, coordinator_epoch) and sets nodes.is_coordinator true for the holder''s row, false for every other row, in one transaction with the log index. p_method says which command the entry is: coordinator.grant (audited as coordinator.elected), coordinator.release (p_holder NULL; coordinator.released), coordinator.handover (coordinator.handover_requested); each writes exactly one audit row: actor p_actor, target node/p_holder (or p_previous_holder when nobody holds the role), old_value {holder, epoch} as applied before, new_value {holder, epoch, previous: p_previous_holder, cluster_id, log_index, log_term}, event_id steep_repl.log_event_id(p_cluster_id, p_log_index). Returns false and writes nothing when the projection is already at or past p_log_index (a replay). p_method snapshot sets holder and epoch as of an installed snapshot, without an audit row: call it after steep_repl.apply_state_snapshot() at the same index; it returns false when it changed nothing or the projection is past that index. Refused: an epoch lower than the applied one (an epoch never goes back), a grant of the applied epoch to another holder, an entry of another cluster.';

------------------------------------------------------------------------------
-- Reading the projection
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.projection(
    OUT cluster_id text,
    OUT applied_index bigint,
    OUT applied_term bigint,
    OUT membership_index bigint,
    OUT updated_at timestamptz,
    OUT coordinator_id text,
    OUT coordinator_epoch bigint
) RETURNS record
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.cluster_id, COALESCE(p.applied_index, 0), COALESCE(p.applied_term, 0),
           p.membership_index, p.updated_at, p.coordinator_id, p.coordinator_epoch
      FROM (VALUES (true)) AS one (id)
      LEFT JOIN steep_repl.cluster_projection p ON p.id = one.id
$$;
REVOKE ALL ON FUNCTION steep_repl.projection() FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.projection() IS
    'How far this node''s projection has applied the cluster''s log: cluster_id, applied_index, applied_term, membership_index and updated_at (null, 0, 0, null, null before anything was applied), and the coordinator as last applied: coordinator_id (null: nobody) and coordinator_epoch (null until applied). The SQL tables may lag the cluster; the daemon (IPC cluster.status) knows the commit index.';
