//! The one way an aggregate of this crate meets cqrs-es.
//!
//! Every aggregate decides a command at one instant (the clock comes from [`DomainServices`]) into
//! zero or more events, computed from the state before the command, and folds events into state.
//! Each aggregate writes those two as plain methods, `decide(&self, command, now)` and
//! `evolve(&mut self, event)`; [`aggregate!`] wires them into [`cqrs_es::Aggregate`], so the
//! framework glue (clock, event sink) exists once and the rules stay synchronous and pure.
//!
//! [`DomainServices`]: crate::clock::DomainServices

/// Implements [`cqrs_es::Aggregate`] for `$state` with the given `TYPE` (the stored
/// `aggregate_type`), command, event and error types, from the state's `decide` and `evolve`.
macro_rules! aggregate {
    ($state:ty, $type:expr, $command:ty, $event:ty, $error:ty) => {
        impl cqrs_es::Aggregate for $state {
            const TYPE: &'static str = $type;
            type Command = $command;
            type Event = $event;
            type Error = $error;
            type Services = $crate::clock::DomainServices;

            async fn handle(
                &mut self,
                command: Self::Command,
                services: &Self::Services,
                sink: &cqrs_es::event_sink::EventSink<Self>,
            ) -> Result<(), Self::Error> {
                for event in self.decide(command, services.now())? {
                    sink.write(event, self).await;
                }
                Ok(())
            }

            fn apply(&mut self, event: Self::Event) {
                self.evolve(event);
            }
        }
    };
}

pub(crate) use aggregate;
