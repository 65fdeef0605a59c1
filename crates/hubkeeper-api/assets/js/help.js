// Contextual help next to each action: what it does, when to reach for it, and what follows.

export const HELP = {
  tokenStatuses: {
    title: 'What the token statuses mean',
    items: [
      ['Connected', 'The access token is valid; the app can call HubSpot for this account. Hubkeeper refreshes it before it expires.'],
      ['Expired', 'The access token has run out, but the refresh token still works: a refresh restores access without involving the customer.'],
      ['Needs re-authorisation', 'HubSpot rejected the refresh token (the app was uninstalled, or the grant was withdrawn). Only the customer can fix this, by connecting again.'],
      ['Disconnected', 'Tokens were removed by an operator or by an uninstall. The tenant\'s data is kept and the customer can reconnect.'],
      ['Revoked', 'Tokens were revoked at HubSpot and removed. Access returns only through a new connection.'],
    ],
  },
  refresh: {
    title: 'About Refresh',
    what: 'Trades the stored refresh token for a new access token right now, instead of waiting for the automatic refresh.',
    when: [
      'A token shows as expired and the app needs access again without bothering the customer.',
      'You want to check that an account\'s grant still works.',
    ],
    consequences: [
      'A fresh access token is stored; its new expiry appears in the table.',
      'If HubSpot rotates refresh tokens, the previous refresh token stops working (Hubkeeper keeps the new one).',
      'If HubSpot refuses the refresh token, the account is marked "needs re-authorisation" and the customer must connect again.',
    ],
  },
  revoke: {
    title: 'About Revoke',
    what: 'Invalidates the account\'s refresh token at HubSpot and deletes the stored tokens.',
    when: [
      'A customer cancels or asks for their data to be removed.',
      'You suspect a token has leaked or see suspicious activity.',
    ],
    consequences: [
      'API access for this account stops: the app gets no more tokens for it.',
      'Background syncs for this account start failing.',
      'The customer has to go through the whole connection flow again to restore access.',
      'It cannot be undone.',
    ],
    note: 'Revoke only when you must, and tell the customer first unless it is a security incident.',
    warning: true,
  },
  disconnect: {
    title: 'About Disconnect',
    what: 'Removes the account\'s tokens and marks the installation as disconnected, keeping its data and history.',
    when: [
      'A customer asks to stop the integration or to have their account removed.',
      'A subscription ends or is not paid.',
      'Unauthorised access or a breach of the terms of service.',
    ],
    consequences: [
      'The app can no longer call HubSpot for this account; features that rely on it stop.',
      'Data synchronisation for this account stops.',
      'The tenant\'s records stay in Hubkeeper.',
      'The customer can connect again at any time to restore access.',
    ],
    note: 'Disconnecting takes effect at once and interrupts the customer\'s work: let them know first unless it is a security issue.',
    warning: true,
  },
  details: {
    title: 'About View details',
    what: 'Opens everything Hubkeeper knows about one connected account:',
    items: [
      'token status and expiry times (never the tokens themselves)',
      'the scopes the customer granted',
      'installation history and app versions',
      'usage: token hand-outs and webhook events',
      'recent activity and errors',
    ],
  },
  tenantColumns: {
    title: 'Reading this table',
    items: [
      ['Hub ID', 'The HubSpot account (portal) number; it never changes.'],
      ['Connected', 'When the customer first authorised the app.'],
      ['Plan', 'The subscription plan the tenant is on, once plans are set up (Pricing Models).'],
      ['Status', 'Whether the app can currently act for this account.'],
    ],
  },
  whyApps: {
    title: 'Why several apps?',
    items: [
      ['Environments', 'Separate HubSpot apps for development, staging and production keep test installs away from customers.'],
      ['Products', 'Each product line can have its own OAuth app and scopes.'],
      ['Regions', 'Deployments in different regions can use their own apps.'],
      ['Trials', 'Try new scopes or features with a subset of customers on a separate app.'],
    ],
  },
  addApp: {
    title: 'About adding an app',
    what: 'Registers an OAuth app from HubSpot\'s developer portal so customers can connect their accounts through it.',
    items: [
      ['Client ID', 'From HubSpot\'s developer portal; it looks like xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.'],
      ['Client secret', 'Also from the developer portal. Hubkeeper stores it encrypted and never shows it again.'],
      ['Redirect URI', 'Must be exactly the URL configured in HubSpot, scheme and path included, e.g. https://hubkeeper.example.com/oauth/callback.'],
      ['Scopes', 'Space-separated permissions the app requests, e.g. "crm.objects.contacts.read oauth".'],
    ],
    note: 'If the redirect URI differs from HubSpot\'s by a single character (even a trailing slash), connecting fails.',
    warning: true,
  },
  editApp: {
    title: 'About editing an app',
    items: [
      ['Safe to change', 'Label, description and environment.'],
      ['Change with care', 'Scopes: adding is safe, removing can break features customers rely on. Redirect URI: must match HubSpot\'s configuration or new connections fail.'],
      ['Cannot change by an edit', 'Client ID and client secret. A different HubSpot app means adding a new app entry; a secret rotated in HubSpot goes in with "Rotate secret".'],
    ],
  },
  rotateSecret: {
    title: 'About rotating a client secret',
    consequences: [
      'Token refreshes use the new secret at once, in every process; refreshes parked after HubSpot rejected the old secret resume.',
      'Webhooks signed with the previous secret are still accepted during the overlap, so deliveries HubSpot already signed are not lost.',
      'The rotation is recorded in the activity log with your key; the secret itself never is.',
    ],
  },
  resumeRefreshes: {
    title: 'About parked refreshes',
    consequences: [
      'Hubkeeper refreshes this app\'s tokens again, with the client secret it has now.',
      'If the secret is still wrong, HubSpot refuses again and refreshes are parked again (one more alert).',
      'If the secret was rotated in HubSpot, use "Rotate secret" instead: that resumes refreshes too.',
    ],
    note: 'Resume after fixing the app in HubSpot (e.g. restoring the secret Hubkeeper knows). The action is recorded in the activity log with your key.',
  },
  deleteApp: {
    title: 'About deleting an app',
    consequences: [
      'Customers connected through this app lose access.',
      'Their tokens stay stored but can no longer be refreshed.',
      'New connections through this app fail.',
      'It cannot be undone: you would have to add the app again with all its details.',
    ],
    note: 'Delete only apps that are no longer used. Check the installation count first: Hubkeeper refuses while installations are active unless you force it.',
    warning: true,
  },
  pricingTypes: {
    title: 'Kinds of pricing plans',
    items: [
      ['Free', 'No charge; a trial or basic tier with limits.'],
      ['One-time', 'A single payment at registration or upgrade.'],
      ['Recurring', 'Charged monthly or yearly.'],
      ['Usage-based', 'Charged per use, e.g. API calls or records synchronised.'],
      ['Hybrid', 'A recurring base fee plus usage charges.'],
    ],
  },
  pricingRules: {
    title: 'How plans are managed',
    items: [
      ['Adding', 'A plan has a unique code (e.g. "starter", "pro"), applies to one app or to all, has a price in a currency, lists its features and its usage limits.'],
      ['Editing', 'Wording and new features can change freely. A price change applies to existing subscribers only at renewal; removing features or lowering limits needs notice to subscribers. For big changes, create a new plan version such as "pro_v2".'],
      ['Deleting', 'Only plans without subscribers can be deleted: move subscribers to another plan first. History is kept for accounting.'],
      ['Status', 'Active (open for sign-ups), inactive/hidden (no new sign-ups, subscribers keep access), deprecated (subscribers encouraged to move), archived (no subscribers, kept for records).'],
    ],
    note: 'Starting with a free tier lowers the barrier to adoption; paid upgrades follow.',
  },
  billing: {
    title: 'About billing and upgrades',
    items: [
      ['Current plans', 'The plans tenants can be on, with their prices and limits.'],
      ['Usage', 'How much of its plan\'s allowance a tenant used this month, the busiest day and the daily average.'],
      ['Upgrades', 'Every plan change with its date, from and to plans, amount and what triggered it (self-service, an admin, or reaching a limit).'],
      ['Registrations', 'How many tenants started free and how many paid, and how many free tenants converted.'],
    ],
  },
  serverConfig: {
    title: 'About the server configuration',
    what: 'The settings this Hubkeeper process is running with, and where each came from (default, environment variable or command line). Secret settings only show whether they are set.',
    when: 'To check what a deployment really runs with before changing it or when troubleshooting.',
    note: 'Settings are read at start-up from environment variables (or a .env file): change them there and restart the process.',
  },
  logging: {
    title: 'About logging',
    items: [
      ['error', 'Failures that need attention now.'],
      ['warn', 'Degraded behaviour and problems that may need attention.'],
      ['info', 'Notable events: connections, refreshes, administrative actions.'],
      ['debug', 'Detailed diagnostics; turn on briefly while troubleshooting.'],
    ],
    note: 'Use info in production. Verbose logging helps debugging but costs disk space and speed; Hubkeeper never logs tokens or secrets at any level.',
  },
  activityFilters: {
    title: 'About the activity log',
    what: 'Every change Hubkeeper records (connections, refreshes, revocations, administrative actions, webhook effects) as one line each, newest first, with who or what caused it.',
    when: 'Auditing who did what, or tracing why an account stopped working: filter by level, time range, installation or app.',
  },
};
