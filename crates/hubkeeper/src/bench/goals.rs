//! The goals each bench scenario is measured against. Every run ends with one line per goal,
//! `goal <name>: <figure> vs <goal> met|not met`, and writes the same into its JSON, so a run
//! says by itself whether it met what docs/performance.md promises, without reading tables.

use serde::Serialize;

/// How a figure is compared with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    AtLeast,
    Below,
    Exactly,
}

/// One goal and what this run measured for it.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub name: String,
    /// `NaN` (`null` in the JSON) when the run did not measure it (a level left out on the
    /// command line): then it is never met.
    pub figure: f64,
    pub target: f64,
    pub comparison: Comparison,
    /// What figure and target count (`commands/s`, `ms`, `x baseline`, ...).
    pub unit: &'static str,
    pub met: bool,
}

impl Goal {
    fn new(
        name: impl Into<String>,
        figure: f64,
        comparison: Comparison,
        target: f64,
        unit: &'static str,
    ) -> Self {
        let met = figure.is_finite()
            && match comparison {
                Comparison::AtLeast => figure >= target,
                Comparison::Below => figure < target,
                Comparison::Exactly => figure == target,
            };
        Self {
            name: name.into(),
            figure,
            target,
            comparison,
            unit,
            met,
        }
    }

    pub fn at_least(name: impl Into<String>, figure: f64, target: f64, unit: &'static str) -> Self {
        Self::new(name, figure, Comparison::AtLeast, target, unit)
    }

    pub fn below(name: impl Into<String>, figure: f64, target: f64, unit: &'static str) -> Self {
        Self::new(name, figure, Comparison::Below, target, unit)
    }

    pub fn exactly(name: impl Into<String>, figure: f64, target: f64, unit: &'static str) -> Self {
        Self::new(name, figure, Comparison::Exactly, target, unit)
    }

    /// `goal <name>: <figure> vs <goal> met|not met`.
    pub fn line(&self) -> String {
        let relation = match self.comparison {
            Comparison::AtLeast => ">=",
            Comparison::Below => "<",
            Comparison::Exactly => "=",
        };
        let figure = if self.figure.is_finite() {
            format!("{} {}", number(self.figure), self.unit)
        } else {
            "not measured".to_owned()
        };
        format!(
            "goal {}: {figure} vs {relation} {} {unit} {}",
            self.name,
            number(self.target),
            if self.met { "met" } else { "not met" },
            unit = self.unit,
        )
    }
}

/// Whole numbers without decimals, small ratios and latencies with enough to compare.
fn number(x: f64) -> String {
    if x.fract() == 0.0 || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// The goals a scenario's figures are judged by.
pub trait Goals {
    fn goals(&self) -> Vec<Goal>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_comparison_decides_met_from_the_figure() {
        assert!(Goal::at_least("rate", 2_000.0, 2_000.0, "/s").met);
        assert!(!Goal::at_least("rate", 1_999.9, 2_000.0, "/s").met);
        assert!(Goal::below("p99", 19.9, 20.0, "ms").met);
        assert!(!Goal::below("p99", 20.0, 20.0, "ms").met);
        assert!(Goal::exactly("calls", 10_000.0, 10_000.0, "calls").met);
        assert!(!Goal::exactly("calls", 10_001.0, 10_000.0, "calls").met);
        // A figure that could not be measured never meets a goal.
        assert!(!Goal::below("p99", f64::NAN, 20.0, "ms").met);
        assert!(!Goal::at_least("rate", f64::INFINITY, 1.0, "/s").met);
    }

    #[test]
    fn the_line_names_figure_goal_and_verdict() {
        assert_eq!(
            Goal::at_least("commands_per_second", 399.4, 2_000.0, "commands/s").line(),
            "goal commands_per_second: 399 commands/s vs >= 2000 commands/s not met"
        );
        assert_eq!(
            Goal::below("token_p99_at_16", 1.234, 2.0, "ms").line(),
            "goal token_p99_at_16: 1.23 ms vs < 2 ms met"
        );
        assert_eq!(
            Goal::below("token_p99_at_16", f64::NAN, 2.0, "ms").line(),
            "goal token_p99_at_16: not measured vs < 2 ms not met"
        );
    }
}
