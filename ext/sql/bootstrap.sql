-- steep_repl bootstrap: runs before any other object is created.
--
-- 1. The version gate. PostgreSQL 18 is required; on an older server the
--    whole CREATE EXTENSION is rolled back here, before any function that
--    would load the (incompatible) shared library is declared.
-- 2. The schema owner check. The control file fixes schema steep_repl and
--    PostgreSQL creates it when missing. If it already exists it must belong
--    to a superuser: the owner of a schema can drop and replace what is in
--    it, so a schema pre-created by an ordinary role would hand that role the
--    registry and the audit trail.
DO $bootstrap$
DECLARE
    server_num integer := current_setting('server_version_num')::integer;
    owner_name name;
    owner_is_superuser boolean;
BEGIN
    IF server_num < 180000 THEN
        RAISE EXCEPTION 'steep_repl requires PostgreSQL 18 or later (server is %)',
                current_setting('server_version')
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Install steep_repl on a PostgreSQL 18 server.';
    END IF;

    SELECT r.rolname, r.rolsuper
      INTO owner_name, owner_is_superuser
      FROM pg_catalog.pg_namespace n
      JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
     WHERE n.nspname = 'steep_repl';

    IF owner_name IS NOT NULL AND NOT owner_is_superuser AND owner_name <> current_user THEN
        RAISE EXCEPTION 'schema steep_repl already exists and is owned by role %, which is not a superuser', owner_name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Drop that schema, or run ALTER SCHEMA steep_repl OWNER TO a superuser, then CREATE EXTENSION steep_repl again.';
    END IF;
END
$bootstrap$;
