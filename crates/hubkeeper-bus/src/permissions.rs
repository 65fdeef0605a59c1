//! Who may publish and subscribe where on NATS: one user per role, each with the least
//! permissions its role needs. This table is the single source of the server's `authorization`
//! block: `nats/authorization.conf` (docker-compose, the cluster configs) is its rendering with
//! passwords from the environment, and `hubkeeper up` renders it with generated passwords.
//!
//! What it rules out: a compromised or buggy process of one role cannot forge another role's
//! messages. Only the API may publish webhook batches and control messages, only the relay may
//! publish events, only the scheduler (and a re-drive through the API) may enqueue refreshes, and
//! a consumer may only read and acknowledge its own stream. Replies travel on per-user inbox
//! prefixes (`_INBOX_<user>.>`), so no role can read another's JetStream answers.
//!
//! Every process also needs what every role does: follow the settings and cache invalidations
//! (`hk.control.>`, `hk.cache.invalidate`) and converge the stream definitions at start-up. Control
//! messages carry no values (listeners re-read Postgres), so subscribing to them reveals nothing.
//!
//! A new role adds a [`NatsUser`] variant and its row in [`NatsUser::permissions`] (the notifier's
//! row goes next to the projector's: it reads the events stream through its own consumer).

use std::fmt::Write as _;

use crate::envelope::EVENT_SUBJECT_PREFIX;
use crate::streams::{
    DLQ_STREAM, DLQ_SUBJECT_PREFIX, EVENTS_STREAM, NOTIFY_STREAM, NOTIFY_SUBJECT_PREFIX,
    REFRESH_STREAM, REFRESH_SUBJECT_PREFIX,
};

/// Webhook streams (defined in `hubkeeper-webhooks`, which depends on this crate).
const WEBHOOK_BATCH_STREAM: &str = "HK_WEBHOOKS";
const WEBHOOK_BATCH_SUBJECTS: &str = "hk.webhook_batches.>";
const WEBHOOK_EVENT_STREAM: &str = "HK_WEBHOOK_EVENTS";
const WEBHOOK_EVENT_SUBJECTS: &str = "hk.webhooks.>";
/// Core NATS subjects every process follows (see `hubkeeper_core::settings` and `broadcast`).
const CONTROL_SUBJECTS: &str = "hk.control.>";
const INVALIDATE_SUBJECT: &str = "hk.cache.invalidate";

/// Every stream Hubkeeper defines; each process converges their definitions at start-up.
pub const STREAMS: [&str; 6] = [
    EVENTS_STREAM,
    REFRESH_STREAM,
    NOTIFY_STREAM,
    DLQ_STREAM,
    WEBHOOK_BATCH_STREAM,
    WEBHOOK_EVENT_STREAM,
];

/// A NATS user: one per role, plus `all` for a process that runs several roles (`hubkeeper up`,
/// `worker all`) and for the operator's command-line tools (dead letters, restore, self-test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatsUser {
    Api,
    Relay,
    Scheduler,
    Refresher,
    Projector,
    Notifier,
    Webhooks,
    All,
}

/// What a user may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl NatsUser {
    /// Every user, in the order of the rendered configuration.
    pub const ALL: [NatsUser; 8] = [
        NatsUser::Api,
        NatsUser::Relay,
        NatsUser::Scheduler,
        NatsUser::Refresher,
        NatsUser::Projector,
        NatsUser::Notifier,
        NatsUser::Webhooks,
        NatsUser::All,
    ];

    /// The user name on the server (also `HK_NATS_USER`).
    pub fn name(self) -> &'static str {
        match self {
            NatsUser::Api => "api",
            NatsUser::Relay => "relay",
            NatsUser::Scheduler => "scheduler",
            NatsUser::Refresher => "refresher",
            NatsUser::Projector => "projector",
            NatsUser::Notifier => "notifier",
            NatsUser::Webhooks => "webhooks",
            NatsUser::All => "all",
        }
    }

    pub fn from_name(name: &str) -> Option<NatsUser> {
        Self::ALL.into_iter().find(|u| u.name() == name)
    }

    /// The environment variable holding this user's password in `nats/authorization.conf`.
    pub fn password_variable(self) -> String {
        format!("HK_NATS_{}_PASSWORD", self.name().to_ascii_uppercase())
    }

    /// Prefix of this user's reply inboxes.
    pub fn inbox_prefix(self) -> String {
        inbox_prefix(self.name())
    }

    /// The least permissions of this user's role.
    pub fn permissions(self) -> Permissions {
        let mut publish = common_publish();
        let mut subscribe = vec![
            format!("{}.>", self.inbox_prefix()),
            CONTROL_SUBJECTS.to_owned(),
            INVALIDATE_SUBJECT.to_owned(),
        ];
        match self {
            NatsUser::Api => {
                // Webhook intake, settings changes, the dead-letter pages (list, show, re-drive
                // to a batch or refresh subject), and live wake-ups of the activity stream.
                publish.push(WEBHOOK_BATCH_SUBJECTS.to_owned());
                publish.push(CONTROL_SUBJECTS.to_owned());
                publish.push(format!("{REFRESH_SUBJECT_PREFIX}.>"));
                // Re-sending a notification delivery.
                publish.push(format!("{NOTIFY_SUBJECT_PREFIX}.>"));
                publish.extend(stream_reads(DLQ_STREAM));
                publish.push(format!("$JS.API.STREAM.MSG.DELETE.{DLQ_STREAM}"));
                subscribe.push(format!("{EVENT_SUBJECT_PREFIX}.>"));
            }
            NatsUser::Relay => {
                publish.push(format!("{EVENT_SUBJECT_PREFIX}.>"));
            }
            NatsUser::Scheduler => {
                publish.push(format!("{REFRESH_SUBJECT_PREFIX}.>"));
            }
            NatsUser::Refresher => {
                publish.extend(consumer(REFRESH_STREAM));
                publish.push(format!("{DLQ_SUBJECT_PREFIX}.refresh"));
            }
            NatsUser::Projector => {
                publish.extend(consumer(EVENTS_STREAM));
                publish.push(format!("{DLQ_SUBJECT_PREFIX}.projector"));
            }
            NatsUser::Notifier => {
                // Fans events out into its own work queue and consumes that.
                publish.extend(consumer(EVENTS_STREAM));
                publish.extend(consumer(NOTIFY_STREAM));
                publish.push(format!("{NOTIFY_SUBJECT_PREFIX}.>"));
                publish.push(format!("{DLQ_SUBJECT_PREFIX}.notify"));
                publish.push(format!("{DLQ_SUBJECT_PREFIX}.notify-fanout"));
            }
            NatsUser::Webhooks => {
                publish.extend(consumer(WEBHOOK_BATCH_STREAM));
                publish.push(WEBHOOK_EVENT_SUBJECTS.to_owned());
                publish.push(format!("{DLQ_SUBJECT_PREFIX}.webhooks"));
            }
            NatsUser::All => {
                // Every role in one process, and the operator's tools (purge on restore,
                // dead letters): Hubkeeper's subjects and streams, nothing else on the server.
                publish = vec!["hk.>".to_owned(), "$JS.API.INFO".to_owned()];
                for stream in STREAMS {
                    publish.push(format!("$JS.API.STREAM.*.{stream}"));
                    publish.push(format!("$JS.API.STREAM.MSG.*.{stream}"));
                    publish.push(format!("$JS.API.DIRECT.GET.{stream}"));
                    publish.push(format!("$JS.API.DIRECT.GET.{stream}.>"));
                    publish.extend(consumer(stream));
                }
                subscribe.push("hk.>".to_owned());
            }
        }
        Permissions { publish, subscribe }
    }
}

/// Prefix of reply inboxes of `user`.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// Every process: JetStream account info, converging stream definitions, cache invalidations.
fn common_publish() -> Vec<String> {
    let mut publish = vec!["$JS.API.INFO".to_owned(), INVALIDATE_SUBJECT.to_owned()];
    for stream in STREAMS {
        for op in ["INFO", "CREATE", "UPDATE"] {
            publish.push(format!("$JS.API.STREAM.{op}.{stream}"));
        }
    }
    publish
}

/// Reading single messages of a stream.
fn stream_reads(stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
    ]
}

/// A durable pull consumer of `stream`: create or look it up, pull, acknowledge.
fn consumer(stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.>"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"),
        format!("$JS.ACK.{stream}.>"),
    ]
}

/// How a user's password appears in the rendered configuration.
#[derive(Clone, Copy)]
pub enum PasswordSource<'a> {
    /// `$HK_NATS_<USER>_PASSWORD`, resolved by nats-server from its environment.
    Environment,
    /// The given password, quoted (generated configurations such as `hubkeeper up`'s).
    Literal(&'a dyn Fn(NatsUser) -> String),
}

/// The `authorization { users = [...] }` block for `users`.
pub fn authorization_block(users: &[NatsUser], passwords: PasswordSource<'_>) -> String {
    let mut out = String::from("authorization {\n  users = [\n");
    for user in users {
        let permissions = user.permissions();
        let password = match passwords {
            PasswordSource::Environment => format!("${}", user.password_variable()),
            PasswordSource::Literal(password) => quoted(&password(*user)),
        };
        let _ = writeln!(out, "    {{");
        let _ = writeln!(out, "      user: {}", quoted(user.name()));
        let _ = writeln!(out, "      password: {password}");
        let _ = writeln!(out, "      permissions: {{");
        let _ = writeln!(
            out,
            "        publish: {{ allow: {} }}",
            list(&permissions.publish)
        );
        let _ = writeln!(
            out,
            "        subscribe: {{ allow: {} }}",
            list(&permissions.subscribe)
        );
        let _ = writeln!(out, "      }}");
        let _ = writeln!(out, "    }}");
    }
    out.push_str("  ]\n}\n");
    out
}

fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn list(subjects: &[String]) -> String {
    let items: Vec<String> = subjects.iter().map(|s| quoted(s)).collect();
    format!("[{}]", items.join(", "))
}

/// `nats/authorization.conf`: the block with passwords from the environment, under a header.
pub fn authorization_file() -> String {
    let mut out = String::from(
        "# Generated from crates/hubkeeper-bus/src/permissions.rs (tests/nats_permissions.rs checks\n\
         # that it matches): one user per role with least permissions. Passwords come from the\n\
         # environment of nats-server (HK_NATS_<USER>_PASSWORD); each Hubkeeper process connects\n\
         # with HK_NATS_USER and HK_NATS_PASSWORD. See docs/operations.md (\"NATS permissions\").\n",
    );
    out.push_str(&authorization_block(
        &NatsUser::ALL,
        PasswordSource::Environment,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_role_but_the_api_publishes_webhook_batches_or_control_messages() {
        for user in NatsUser::ALL {
            let publish = user.permissions().publish;
            let may = |subject: &str| publish.iter().any(|p| p == subject);
            let api_or_all = matches!(user, NatsUser::Api | NatsUser::All);
            assert_eq!(
                may(WEBHOOK_BATCH_SUBJECTS),
                user == NatsUser::Api,
                "{user:?}"
            );
            assert_eq!(may(CONTROL_SUBJECTS), user == NatsUser::Api, "{user:?}");
            assert_eq!(
                may(&format!("{EVENT_SUBJECT_PREFIX}.>")),
                user == NatsUser::Relay,
                "{user:?}"
            );
            if !api_or_all {
                assert!(!publish.iter().any(|p| p.starts_with("hk.control")));
            }
            assert!(!publish.iter().any(|p| p == ">" || p == "$JS.API.>"));
        }
    }

    #[test]
    fn the_block_names_every_user_with_its_password_variable() {
        let text = authorization_file();
        for user in NatsUser::ALL {
            assert!(text.contains(&format!("user: \"{}\"", user.name())));
            assert!(text.contains(&format!("password: ${}", user.password_variable())));
            assert_eq!(NatsUser::from_name(user.name()), Some(user));
        }
        let literal = |u: NatsUser| format!("pw-{}", u.name());
        let generated = authorization_block(&[NatsUser::Relay], PasswordSource::Literal(&literal));
        assert!(generated.contains("password: \"pw-relay\""));
        assert!(generated.contains("\"_INBOX_relay.>\""));
    }
}
