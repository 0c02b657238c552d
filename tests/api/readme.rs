//! The README's shell examples, run as written against a fresh server, so the docs cannot
//! drift from what the server does.
//!
//! - Every ```` ```sh ```` block runs, in order, in one bash session (variables carry from
//!   one block to the next, as for a reader pasting them into one terminal). The working
//!   directory is the server's: data in `./data`, the generated admin token in
//!   `data/admin_token`, as after `cargo run --release`.
//! - The only change to the text: `localhost:8080` and `127.0.0.1:8080` name the test
//!   server's port. `curl` fails on an HTTP error (`--fail-with-body`) and ends each answer
//!   with a newline, so a refused example fails the test and each answer is one line.
//! - Each documented answer (a comment starting `# {`, continued by comments starting `#  `)
//!   must match a line the block printed, in order; `…` stands for anything.
//! - A block preceded by `<!-- readme-test: skip: <reason> -->` is not run (it starts a
//!   server, needs a Kafka broker, or is the test suite itself); the reason is required.

use std::path::Path;
use std::process::Command;

use crate::crash::ServerProcess;

/// A fenced shell block of the README.
struct Block {
    /// Line of the opening fence, for messages.
    line: usize,
    /// The commands.
    text: String,
    /// Why it is not run, if it is not.
    skip: Option<String>,
}

const SKIP_MARKER: &str = "<!-- readme-test: skip:";

fn shell_blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        if lines[index].trim_end() != "```sh" {
            index += 1;
            continue;
        }
        let skip = index
            .checked_sub(1)
            .and_then(|previous| lines[previous].trim().strip_prefix(SKIP_MARKER))
            .map(|reason| reason.trim_end_matches("-->").trim().to_owned());
        let start = index + 1;
        let end = (start..lines.len())
            .find(|&line| lines[line].trim_end() == "```")
            .unwrap_or_else(|| panic!("README line {}: the block never closes", index + 1));
        blocks.push(Block {
            line: index + 1,
            text: lines[start..end].join("\n"),
            skip,
        });
        index = end + 1;
    }
    blocks
}

/// The answers a block documents: `# {…}` comments (with `#  ` continuation lines), as
/// patterns where `…` matches anything.
fn documented_answers(block: &str) -> Vec<String> {
    let mut answers: Vec<String> = Vec::new();
    let mut continuing = false;
    for line in block.lines() {
        let line = line.trim_start();
        if let Some(answer) = line.strip_prefix("# {").or_else(|| line.strip_prefix("# [")) {
            let opening = &line[2..3];
            answers.push(format!("{opening}{answer}"));
            continuing = true;
        } else if let (true, Some(more)) = (continuing, line.strip_prefix("#  ")) {
            answers.last_mut().expect("continues an answer").push_str(more.trim());
        } else {
            continuing = false;
        }
    }
    answers
}

/// Whether `line` is `pattern` with each `…` standing for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let (first, rest) = parts.split_first().expect("split yields one part at least");
    let Some(mut remaining) = line.strip_prefix(first) else {
        return false;
    };
    for (index, part) in rest.iter().enumerate() {
        let last = index + 1 == rest.len();
        if last {
            return remaining.ends_with(part);
        }
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.is_empty()
}

fn run_blocks(dir: &Path, address: &str, blocks: &[&Block]) -> std::process::Output {
    let mut script = String::from(
        "set -euo pipefail\ncurl() { command curl --fail-with-body --silent --show-error -w '\\n' \"$@\"; }\n",
    );
    for (index, block) in blocks.iter().enumerate() {
        let text = block
            .text
            .replace("localhost:8080", address)
            .replace("127.0.0.1:8080", address);
        script.push_str(&format!("echo '@@block {index}@@'\n{text}\n"));
    }
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("bash runs")
}

#[actix_web::test]
async fn every_shell_example_in_the_readme_runs_as_written_against_a_fresh_server() {
    for tool in ["curl", "jq"] {
        assert!(
            Command::new(tool).arg("--version").output().is_ok(),
            "the README's examples need {tool} (scripts/test installs it)"
        );
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks = shell_blocks(&readme);
    for block in &blocks {
        if let Some(reason) = &block.skip {
            assert!(
                !reason.is_empty(),
                "README line {}: a skipped block says why",
                block.line
            );
        }
    }
    let runnable: Vec<&Block> = blocks.iter().filter(|block| block.skip.is_none()).collect();
    assert!(
        runnable.len() >= 2,
        "the quick start and the buying path run (found {} runnable blocks)",
        runnable.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let server = ServerProcess::start_with(dir.path(), &client, &[]).await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let output = run_blocks(dir.path(), &address, &runnable);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let printed: Vec<&str> = stdout.split("@@block ").skip(1).collect();
    assert!(
        output.status.success(),
        "the README block at line {} failed ({}):\n{stderr}\n--- it printed:\n{}",
        runnable[printed.len().saturating_sub(1)].line,
        output.status,
        printed.last().copied().unwrap_or_default()
    );
    assert_eq!(printed.len(), runnable.len(), "every block ran");
    for (block, printed) in runnable.iter().zip(printed) {
        let mut lines = printed.lines().skip(1);
        for answer in documented_answers(&block.text) {
            assert!(
                lines.any(|line| matches(&answer, line)),
                "README block at line {}: the documented answer\n  {answer}\nis not what it printed:\n{printed}",
                block.line
            );
        }
    }
    assert!(server.terminate(), "the server stops cleanly after the examples");
}

#[test]
fn an_ellipsis_in_a_documented_answer_stands_for_any_text() {
    assert!(matches(
        r#"{"sku":"mug",…,"available":3}"#,
        r#"{"sku":"mug","on_hand":3,"available":3}"#
    ));
    assert!(matches(r#"{"id":"…"}"#, r#"{"id":"01a2"}"#));
    assert!(!matches(
        r#"{"sku":"mug",…,"available":3}"#,
        r#"{"sku":"mug","on_hand":3,"available":4}"#
    ));
    assert!(!matches(r#"{"sku":"tee"…"#, r#"{"sku":"mug"}"#));
}
