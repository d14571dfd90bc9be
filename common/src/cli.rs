//! The command-line flags every binary takes, declared once so that
//! `--config` and `--check-config` read and behave the same on the
//! scheduler, the worker and the notifier.

use std::path::PathBuf;

/// `--config` and `--check-config`, flattened into each binary's parser.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// TOML configuration file; every key can be overridden with ROLECALL__<KEY>.
    #[arg(long, short, env = "ROLECALL_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The same as the `check-config` subcommand (kept for scripts).
    #[arg(long)]
    pub check_config: bool,
}

/// The subcommand a binary was given, as far as checking is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    /// No subcommand: the binary's default.
    Nothing,
    /// `check-config [--connect]`.
    CheckConfig {
        /// Also connect to each backend.
        connect: bool,
    },
    /// Any other subcommand.
    Other,
}

/// `--check-config` given together with another subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("--check-config takes no other command")]
pub struct CheckWithOtherCommand;

impl ConfigArgs {
    /// Whether to check the configuration instead of running:
    /// `Some(connect)` for the `check-config` subcommand or the flag (which
    /// never connects), `None` to run what was given.
    pub fn check(&self, given: Given) -> Result<Option<bool>, CheckWithOtherCommand> {
        match (given, self.check_config) {
            (Given::CheckConfig { connect }, _) => Ok(Some(connect)),
            (Given::Nothing, true) => Ok(Some(false)),
            (Given::Other, true) => Err(CheckWithOtherCommand),
            (_, false) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_and_the_subcommand_both_check_and_only_the_subcommand_connects() {
        let flag = ConfigArgs {
            check_config: true,
            ..Default::default()
        };
        let plain = ConfigArgs::default();
        assert_eq!(flag.check(Given::Nothing), Ok(Some(false)));
        assert_eq!(
            plain.check(Given::CheckConfig { connect: true }),
            Ok(Some(true))
        );
        assert_eq!(
            flag.check(Given::CheckConfig { connect: true }),
            Ok(Some(true))
        );
        assert_eq!(plain.check(Given::Nothing), Ok(None));
        assert_eq!(plain.check(Given::Other), Ok(None));
        assert_eq!(flag.check(Given::Other), Err(CheckWithOtherCommand));
    }
}
