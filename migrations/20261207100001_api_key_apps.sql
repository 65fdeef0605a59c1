-- The apps a service key is bound to. A service key acts only on installations and connect
-- sessions of these apps and receives only their tokens; an empty list binds it to nothing (it
-- receives no tokens at all). Other roles are never bound: the list stays empty for them.
ALTER TABLE api_keys
    ADD COLUMN app_ids text[] NOT NULL DEFAULT '{}';
