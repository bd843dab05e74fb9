-- steep_repl daemon writes (since 0.3.0): every write the steep-repl daemon
-- makes outside the apply functions goes through one of these. They are
-- SECURITY DEFINER with EXECUTE granted to steep_repl_daemon only
-- (privileges.sql), so the daemon's role needs no privilege on any table
-- beyond SELECT.

------------------------------------------------------------------------------
-- A peer's status and heartbeat, as this node sees them
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.record_peer_status(p_node_id text, p_status text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.record_peer_status';
BEGIN
    PERFORM steep_repl.check_node_id(fn, p_node_id);
    PERFORM steep_repl.check_status(fn, p_status);
    -- offline is an operator's decision: never overwritten here.
    UPDATE steep_repl.nodes n SET status = p_status
     WHERE n.node_id = p_node_id AND n.status <> 'offline' AND n.status <> p_status;
    IF FOUND THEN
        RETURN true;
    END IF;
    -- True only when the row holds the status (or offline): a row the
    -- projection committed after the UPDATE's snapshot was not written,
    -- and the daemon must try again rather than count it done.
    RETURN EXISTS (SELECT 1 FROM steep_repl.nodes n
                    WHERE n.node_id = p_node_id AND n.status IN (p_status, 'offline'));
END
$$;
REVOKE ALL ON FUNCTION steep_repl.record_peer_status(text, text) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.record_peer_status(text, text) IS
    'Daemon only: sets the status of a peer as this node sees it (never over offline; an unchanged status writes nothing), audited as node.status_changed. Returns whether the node is registered with that status (or offline) now; false tells the daemon to try again.';

CREATE FUNCTION steep_repl.record_peer_seen(p_node_id text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM steep_repl.check_node_id('steep_repl.record_peer_seen', p_node_id);
    UPDATE steep_repl.nodes n SET last_seen = now() WHERE n.node_id = p_node_id;
    RETURN FOUND;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.record_peer_seen(text) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.record_peer_seen(text) IS
    'Daemon only: a heartbeat from a peer, last_seen = now() (not audited). Returns whether the node is registered.';

------------------------------------------------------------------------------
-- The daemon's own events (its spool)
------------------------------------------------------------------------------
-- What the daemon chooses, and what it does not. It gives each event its
-- event_id (the idempotency key of spool replays), action, target, values,
-- success and error, the address the event is about (the peer that failed
-- authentication: client_ip) and the time it happened, which is kept unless
-- it is later than now() or not finite (then now()). The id comes from the
-- sequence and the actor is current_actor(): the daemon login's
-- steep_repl.actor setting (steep-repl@<node_id>).
CREATE FUNCTION steep_repl.append_daemon_events(
    p_event_ids      uuid[],
    p_occurred_at    timestamptz[],
    p_actions        text[],
    p_target_types   text[],
    p_target_ids     text[],
    p_old_values     jsonb[],
    p_new_values     jsonb[],
    p_client_ips     inet[],
    p_successes      boolean[],
    p_error_messages text[]
) RETURNS bigint
    LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.append_daemon_events';
    events constant integer := COALESCE(cardinality(p_event_ids), 0);
    -- Once per batch: current_actor() carries a SET clause, so it is never
    -- inlined and would run (with its pg_has_role) once per row.
    actor constant text := steep_repl.current_actor();
    inserted bigint;
BEGIN
    IF events <> COALESCE(cardinality(p_occurred_at), 0)
       OR events <> COALESCE(cardinality(p_actions), 0)
       OR events <> COALESCE(cardinality(p_target_types), 0)
       OR events <> COALESCE(cardinality(p_target_ids), 0)
       OR events <> COALESCE(cardinality(p_old_values), 0)
       OR events <> COALESCE(cardinality(p_new_values), 0)
       OR events <> COALESCE(cardinality(p_client_ips), 0)
       OR events <> COALESCE(cardinality(p_successes), 0)
       OR events <> COALESCE(cardinality(p_error_messages), 0) THEN
        RAISE EXCEPTION '%: every array must have one element per event (% event ids)', fn, events
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF array_position(p_event_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION '%: p_event_ids[%] must not be null', fn, array_position(p_event_ids, NULL)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO steep_repl.audit_log AS a
        (event_id, occurred_at, action, actor, target_type, target_id, old_value, new_value,
         client_ip, success, error_message)
    SELECT e.event_id,
           CASE WHEN isfinite(e.occurred_at) AND e.occurred_at <= now() THEN e.occurred_at ELSE now() END,
           e.action, actor, e.target_type, e.target_id, e.old_value, e.new_value,
           e.client_ip, COALESCE(e.success, true), e.error_message
      FROM unnest(p_event_ids, p_occurred_at, p_actions, p_target_types, p_target_ids,
                  p_old_values, p_new_values, p_client_ips, p_successes, p_error_messages)
           AS e (event_id, occurred_at, action, target_type, target_id, old_value, new_value,
                 client_ip, success, error_message)
    ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    RETURN inserted;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.append_daemon_events(uuid[], timestamptz[], text[], text[], text[], jsonb[], jsonb[], inet[], boolean[], text[]) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.append_daemon_events(uuid[], timestamptz[], text[], text[], text[], jsonb[], jsonb[], inet[], boolean[], text[]) IS
    'Daemon only: appends a batch of the daemon''s own events (one array element per event) and returns how many were new; an event_id already in audit_log is skipped (spool replays). The actor is current_actor() and the id comes from the sequence; occurred_at is kept unless later than now() or not finite (then now()).';
