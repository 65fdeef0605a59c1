//! The projector: read models built from the event stream.

use std::time::Duration;

use async_nats::jetstream;
use hubkeeper_projections::{Projector, ProjectorConfig};
use sqlx::PgPool;

use crate::config::Config;

pub fn projector(config: &Config, pool: &PgPool, js: &jetstream::Context) -> Projector {
    Projector::new(
        pool.clone(),
        js.clone(),
        ProjectorConfig {
            batch_size: config.projector.projector_batch_size.max(1),
            max_deliver: config.projector.projector_max_deliver.max(1),
            ack_wait: config
                .projector
                .projector_ack_wait
                .max(Duration::from_secs(1)),
            ..ProjectorConfig::default()
        },
    )
}
