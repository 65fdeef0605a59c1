-- A revoke or disconnect announced for later (the app is notified first): the pending one per
-- installation, projected from InstallationRemovalScheduled and cleared by its cancel, by any
-- revoke, disconnect, uninstall, reconnect or forget. The scheduled-removals task polls it.
ALTER TABLE rm_installations ADD COLUMN removal_action text;
ALTER TABLE rm_installations ADD COLUMN removal_effective_at timestamptz;
CREATE INDEX rm_installations_removal_due ON rm_installations (removal_effective_at)
    WHERE removal_effective_at IS NOT NULL;
