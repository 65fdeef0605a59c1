-- Client secret rotation and parked refreshes, as the apps read model shows them: when the
-- secret was last rotated, and since when HubSpot's refusal of the app's credentials parks its
-- refreshes (NULL when not parked; the refresh scheduler skips those apps' installations).
ALTER TABLE rm_apps ADD COLUMN secret_rotated_at timestamptz;
ALTER TABLE rm_apps ADD COLUMN refreshes_parked_at timestamptz;
