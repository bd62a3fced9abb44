//! The scripted-model marker language: parses `@@write`, `@@bash`, `@@reply`, `@@sleep` and
//! `@@error` lines out of a prompt into a list of [`ScriptStep`]s. It only parses text; it
//! must not look at HTTP requests or decide which step a conversation is at (that is
//! `conversation`'s job). The language is documented in `docs/scripted-model.md`.

use std::time::Duration;

use rdev_core::ErrorCode;

/// One model turn the script asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A Write tool call; `path` is as written in the script (maybe relative).
    Write {
        /// Target path, relative paths are joined to the agent's working directory later.
        path: String,
        /// File content: every script line up to `@@end`, each ended with `\n`.
        content: String,
    },
    /// A Bash tool call running `command`.
    Bash {
        /// The shell command.
        command: String,
    },
    /// A final text answer (`end_turn`); nothing after it is served.
    Reply {
        /// The answer text.
        text: String,
    },
    /// Answer with this HTTP status and an Anthropic error body, every time it is asked.
    Error {
        /// HTTP status, 400..=599.
        status: u16,
        /// Message placed in the error body.
        message: String,
    },
}

/// A [`Step`] plus the delay a preceding `@@sleep` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptStep {
    /// Wait this long before answering.
    pub delay: Duration,
    /// What to answer.
    pub step: Step,
}

/// A parsed script: its steps, and a delay for the final `"Done."` answer when a
/// `@@sleep` is the last directive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Script {
    /// Steps in the order they are served, one per model turn.
    pub steps: Vec<ScriptStep>,
    /// Delay before the implicit final answer once the steps have run out.
    pub trailing_delay: Duration,
}

/// A script line that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// `@@word` where `word` is not a directive of the language.
    #[error("unknown directive @@{0} (known: write, bash, reply, sleep, error, end)")]
    UnknownDirective(String),
    /// A directive without its required argument.
    #[error("@@{0} needs an argument")]
    MissingArgument(&'static str),
    /// `@@sleep` with something that is not a number of milliseconds.
    #[error("@@sleep wants milliseconds, got {0:?}")]
    BadSleep(String),
    /// `@@error` with a status outside 400..=599.
    #[error("@@error wants an HTTP status 400..=599, got {0:?}")]
    BadStatus(String),
    /// `@@end` without an open `@@write`.
    #[error("@@end without @@write")]
    StrayEnd,
}

impl ErrorCode for ScriptError {
    fn code(&self) -> &'static str {
        match self {
            Self::UnknownDirective(_) => "script_unknown_directive",
            Self::MissingArgument(_) => "script_missing_argument",
            Self::BadSleep(_) => "script_bad_sleep",
            Self::BadStatus(_) => "script_bad_status",
            Self::StrayEnd => "script_stray_end",
        }
    }
}

/// Splits a line into `(directive, argument)` when it is `@@word[ rest]`. Lines such as
/// diff hunk headers (`@@ -1,2 +1,3 @@`) are not directives because no word follows `@@`.
fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix("@@")?;
    let word_len = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    if word_len == 0 {
        return None;
    }
    let (word, arg) = rest.split_at(word_len);
    Some((word, arg.trim()))
}

/// True when `text` holds at least one `@@word` line. Unknown words count too, so a typo
/// such as `@@wirte` surfaces as a parse error instead of a silent echo.
pub fn has_directives(text: &str) -> bool {
    text.lines().any(|line| directive(line).is_some())
}

/// Parses every directive in `text`; ordinary lines between directives are ignored.
/// `@@reply` ends the script: later lines are not read.
pub fn parse(text: &str) -> Result<Script, ScriptError> {
    let mut script = Script::default();
    let mut delay = Duration::ZERO;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some((word, arg)) = directive(line) else {
            continue;
        };
        let step = match word {
            "write" => {
                if arg.is_empty() {
                    return Err(ScriptError::MissingArgument("write"));
                }
                let mut content = String::new();
                for body in lines.by_ref() {
                    if matches!(directive(body), Some(("end", _))) {
                        break;
                    }
                    content.push_str(body);
                    content.push('\n');
                }
                Step::Write {
                    path: arg.to_owned(),
                    content,
                }
            }
            "bash" if arg.is_empty() => return Err(ScriptError::MissingArgument("bash")),
            "bash" => Step::Bash {
                command: arg.to_owned(),
            },
            "reply" => Step::Reply {
                text: arg.to_owned(),
            },
            "sleep" => {
                let ms = arg
                    .parse::<u64>()
                    .map_err(|_| ScriptError::BadSleep(arg.to_owned()))?;
                delay += Duration::from_millis(ms);
                continue;
            }
            "error" => parse_error(arg)?,
            "end" => return Err(ScriptError::StrayEnd),
            other => return Err(ScriptError::UnknownDirective(other.to_owned())),
        };
        let is_reply = matches!(step, Step::Reply { .. });
        script.steps.push(ScriptStep {
            delay: std::mem::take(&mut delay),
            step,
        });
        if is_reply {
            return Ok(script);
        }
    }
    script.trailing_delay = delay;
    Ok(script)
}

fn parse_error(arg: &str) -> Result<Step, ScriptError> {
    let (status, message) = arg.split_once(char::is_whitespace).unwrap_or((arg, ""));
    if status.is_empty() {
        return Err(ScriptError::MissingArgument("error"));
    }
    let status = status
        .parse::<u16>()
        .ok()
        .filter(|s| (400..=599).contains(s))
        .ok_or_else(|| ScriptError::BadStatus(status.to_owned()))?;
    let message = match message.trim() {
        "" => format!("scripted error {status}"),
        m => m.to_owned(),
    };
    Ok(Step::Error { status, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_directives_in_order_with_sleep_attached_to_next_step() {
        let script = parse(
            "Build it.\n@@write a/b.txt\nline one\n  indented\n@@end\n@@sleep 250\n@@bash echo hi > x\n@@reply All done\n@@bash never\n",
        )
        .unwrap();
        assert_eq!(
            script.steps,
            vec![
                ScriptStep {
                    delay: Duration::ZERO,
                    step: Step::Write {
                        path: "a/b.txt".into(),
                        content: "line one\n  indented\n".into()
                    }
                },
                ScriptStep {
                    delay: Duration::from_millis(250),
                    step: Step::Bash {
                        command: "echo hi > x".into()
                    }
                },
                ScriptStep {
                    delay: Duration::ZERO,
                    step: Step::Reply {
                        text: "All done".into()
                    }
                },
            ]
        );
    }

    #[test]
    fn error_directive_keeps_status_and_message() {
        let script = parse("@@error 529 too busy\n").unwrap();
        assert_eq!(
            script.steps[0].step,
            Step::Error {
                status: 529,
                message: "too busy".into()
            }
        );
        assert_eq!(
            parse("@@error 500").unwrap().steps[0].step,
            Step::Error {
                status: 500,
                message: "scripted error 500".into()
            }
        );
    }

    #[test]
    fn bad_lines_are_reported_with_codes() {
        assert_eq!(
            parse("@@wirte x").unwrap_err().code(),
            "script_unknown_directive"
        );
        assert_eq!(
            parse("@@sleep soon").unwrap_err().code(),
            "script_bad_sleep"
        );
        assert_eq!(
            parse("@@error 200").unwrap_err().code(),
            "script_bad_status"
        );
        assert_eq!(
            parse("@@bash").unwrap_err().code(),
            "script_missing_argument"
        );
        assert_eq!(parse("@@end").unwrap_err().code(), "script_stray_end");
    }

    #[test]
    fn diff_hunks_and_plain_text_are_not_directives() {
        assert!(!has_directives("@@ -1,3 +1,4 @@\nhello"));
        assert!(!has_directives("just a prompt"));
        assert!(has_directives("intro\n  @@bash ls"));
        assert!(parse("@@ -1 +1 @@").unwrap().steps.is_empty());
        assert!(has_directives("@@wirte typo"));
    }

    #[test]
    fn trailing_sleep_delays_the_final_answer() {
        let script = parse("@@bash ls\n@@sleep 40").unwrap();
        assert_eq!(script.trailing_delay, Duration::from_millis(40));
    }

    #[test]
    fn unterminated_write_takes_the_rest_of_the_text() {
        let script = parse("@@write f\nabc").unwrap();
        assert_eq!(
            script.steps[0].step,
            Step::Write {
                path: "f".into(),
                content: "abc\n".into()
            }
        );
    }
}
