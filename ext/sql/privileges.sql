-- steep_repl privileges (since 0.3.0): three roles, each with the least it
-- needs. Nothing is granted to PUBLIC.
--
--   steep_repl_reader  SELECT on the four tables; get_state(), projection().
--   steep_repl_daemon  what the steep-repl daemon does: SELECT on nodes,
--                      coordinator_state and audit_log; EXECUTE on the apply
--                      functions, projection(), record_peer_status(),
--                      record_peer_seen(), append_daemon_events() and
--                      prune_audit(). No INSERT, UPDATE or DELETE anywhere.
--   steep_repl_admin   an operator: SELECT on the four tables; EXECUTE on
--                      register_node(), remove_node(), heartbeat(),
--                      set_status(), get_state(), projection(), prune_audit().
--
-- The roles are NOLOGIN groups: a DBA grants them to login roles
-- (GRANT steep_repl_daemon TO steep). Roles belong to the whole cluster of
-- databases, so they are created here only when missing: a second database
-- installing the extension reuses them (its grants are its own). A role of
-- that name made beforehand by a superuser is used as it is; one that a
-- role other than a superuser administers (WITH ADMIN OPTION, as a
-- CREATEROLE role that created it does) is refused, since that role could
-- grant itself the daemon's or operator's rights.
DO $roles$
DECLARE
    wanted constant text[] := ARRAY['steep_repl_reader', 'steep_repl_daemon', 'steep_repl_admin'];
    role_name text;
    administrator name;
BEGIN
    FOREACH role_name IN ARRAY wanted LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            CONTINUE;
        END IF;
        IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = role_name) THEN
            RAISE EXCEPTION 'role % already exists and is a superuser', role_name
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('steep_repl grants %s only what it needs; drop that role or ALTER ROLE %s NOSUPERUSER, then CREATE EXTENSION steep_repl again.', role_name, role_name);
        END IF;
        SELECT m.rolname INTO administrator
          FROM pg_catalog.pg_auth_members a
          JOIN pg_catalog.pg_roles g ON g.oid = a.roleid
          JOIN pg_catalog.pg_roles m ON m.oid = a.member
         WHERE g.rolname = role_name AND a.admin_option AND NOT m.rolsuper
         ORDER BY m.rolname LIMIT 1;
        IF administrator IS NOT NULL THEN
            RAISE EXCEPTION 'role % already exists and role %, which is not a superuser, may grant it (ADMIN OPTION)', role_name, administrator
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('REVOKE ADMIN OPTION FOR %s FROM %s (or drop role %s), then CREATE EXTENSION steep_repl again.', role_name, administrator, role_name);
        END IF;
    END LOOP;
END
$roles$;

GRANT USAGE ON SCHEMA steep_repl TO steep_repl_reader, steep_repl_daemon, steep_repl_admin;

-- Reading.
GRANT SELECT ON steep_repl.nodes, steep_repl.coordinator_state, steep_repl.cluster_projection, steep_repl.audit_log
    TO steep_repl_reader, steep_repl_admin;
GRANT SELECT ON steep_repl.nodes, steep_repl.coordinator_state, steep_repl.audit_log TO steep_repl_daemon;
GRANT EXECUTE ON FUNCTION steep_repl.get_state(text) TO steep_repl_reader, steep_repl_admin;
GRANT EXECUTE ON FUNCTION steep_repl.projection() TO steep_repl_reader, steep_repl_daemon, steep_repl_admin;

-- The daemon: applying the cluster's log, its peers' status and heartbeats,
-- its own events, the retention of the audit log.
GRANT EXECUTE ON FUNCTION
    steep_repl.apply_state(text, bigint, bigint, text, jsonb, boolean, text, inet, text),
    steep_repl.apply_state_batch(text, jsonb),
    steep_repl.apply_state_snapshot(text, bigint, bigint, jsonb),
    steep_repl.advance_projection(text, bigint, bigint),
    steep_repl.apply_membership(bigint, jsonb),
    steep_repl.apply_coordinator(text, bigint, bigint, text, bigint, text, text, text),
    steep_repl.record_peer_status(text, text),
    steep_repl.record_peer_seen(text),
    steep_repl.append_daemon_events(uuid[], timestamptz[], text[], text[], text[], jsonb[], jsonb[], inet[], boolean[], text[]),
    steep_repl.prune_audit(interval)
    TO steep_repl_daemon;

-- An operator.
GRANT EXECUTE ON FUNCTION
    steep_repl.register_node(text, text, text, integer, integer, text, integer),
    steep_repl.remove_node(text),
    steep_repl.heartbeat(text, text),
    steep_repl.set_status(text, text),
    steep_repl.prune_audit(interval)
    TO steep_repl_admin;
