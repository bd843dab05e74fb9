-- steep_repl finalize: runs after every other object exists.
-- The internal helpers are not part of the API.
REVOKE ALL ON FUNCTION steep_repl.check_status(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION steep_repl.check_node_id(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION steep_repl.raise_unknown_node(text, text) FROM PUBLIC;
