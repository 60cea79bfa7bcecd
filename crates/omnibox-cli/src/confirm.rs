//! Asking before a destructive change.

use std::io::{BufRead, Write};

use crate::args::Confirm;
use crate::error::{CliError, CliResult};

/// Ask `question` on stderr and read the answer from stdin, unless `--yes`. Anything but
/// `y`/`yes` (including end of input, as in a script without `--yes`) aborts.
pub fn confirm(confirm: Confirm, question: &str) -> CliResult {
    if confirm.yes {
        return Ok(());
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let read = std::io::stdin().lock().read_line(&mut answer);
    match read {
        Ok(n) if n > 0 && matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") => {
            Ok(())
        }
        Ok(0) => Err(CliError::aborted(
            "aborted: no answer (pass --yes to run without asking)",
        )),
        _ => Err(CliError::aborted("aborted")),
    }
}
