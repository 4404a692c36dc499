//! The documentation stays true: every relative link in README.md,
//! CONTRIBUTING.md and docs/*.md resolves (the file exists, a `#anchor` names
//! a heading of it), every flag the docs give an imgpack command exists in
//! that command's `--help`, and the defaults of flag tables are the ones
//! `--help` shows. CONTRIBUTING.md states the rule that decides which
//! command a flag belongs to; this file implements it. A few documented
//! commands are run as written: the "Try it locally" registry config and its
//! two-platform push, and the `go build` lines that CI and users copy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use imgpack_e2e::http::{free_port, get_when_up};
use imgpack_e2e::{copy_project, have_tool, imgpack, run_expect, stderr, workspace_root};
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// Programs whose flags the docs mention too; their flags are never checked.
const OTHER_PROGRAMS: &[&str] = &[
    "go",
    "cargo",
    "rustc",
    "rustup",
    "docker",
    "podman",
    "buildah",
    "skopeo",
    "umoci",
    "runc",
    "kubectl",
    "kustomize",
    "git",
    "tar",
    "gzip",
    "curl",
    "ko",
    "krust",
    "crane",
];

/// Every page the test keeps true, as (path relative to the workspace, text).
fn pages() -> Vec<(PathBuf, String)> {
    let root = workspace_root();
    let mut paths = vec![PathBuf::from("README.md"), PathBuf::from("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .map(|path| path.strip_prefix(&root).unwrap().to_owned())
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(root.join(&path))
                .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
            (path, text)
        })
        .collect()
}

fn parser(text: &str) -> Parser<'_> {
    Parser::new_ext(text, Options::ENABLE_TABLES)
}

// ---------------------------------------------------------------- links

/// GitHub's anchor for a heading: lowercase; letters, digits, `-` and `_`
/// kept, spaces become `-`, everything else is dropped.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a page's headings, with GitHub's `-1`, `-2` for repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    let mut heading: Option<String> = None;
    for event in parser(text) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let base = github_anchor(&heading.take().unwrap_or_default());
                let count = seen.entry(base.clone()).or_default();
                anchors.insert(match *count {
                    0 => base,
                    n => format!("{base}-{n}"),
                });
                *count += 1;
            }
            _ => {}
        }
    }
    anchors
}

/// Problems with the relative links of one page.
fn broken_links(page: &Path, text: &str) -> Vec<String> {
    let root = workspace_root();
    let dir = page.parent().unwrap_or(Path::new(""));
    let mut problems = Vec::new();
    for event in parser(text) {
        let (Event::Start(Tag::Link { dest_url, .. }) | Event::Start(Tag::Image { dest_url, .. })) =
            event
        else {
            continue;
        };
        if dest_url.contains("://") || dest_url.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = dest_url.split_once('#').unwrap_or((&*dest_url, ""));
        let target = if file.is_empty() {
            page.to_owned()
        } else {
            dir.join(file)
        };
        let on_disk = root.join(&target);
        if !on_disk.exists() {
            problems.push(format!(
                "{}: link to {dest_url}: no such file",
                page.display()
            ));
            continue;
        }
        if anchor.is_empty() {
            continue;
        }
        let is_markdown = on_disk.extension().is_some_and(|e| e == "md");
        let known =
            is_markdown && anchors(&std::fs::read_to_string(&on_disk).unwrap()).contains(anchor);
        if !known {
            problems.push(format!(
                "{}: link to {dest_url}: {} has no heading #{anchor}",
                page.display(),
                target.display()
            ));
        }
    }
    problems
}

#[test]
fn every_relative_link_resolves() {
    let problems: Vec<String> = pages()
        .iter()
        .flat_map(|(page, text)| broken_links(page, text))
        .collect();
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn anchors_follow_github() {
    assert_eq!(
        github_anchor("`imgpack build` flags"),
        "imgpack-build-flags"
    );
    assert_eq!(
        github_anchor("`--push` without a reference"),
        "--push-without-a-reference"
    );
    assert_eq!(github_anchor("imgpack's own image"), "imgpacks-own-image");
    assert_eq!(
        github_anchor("Configuration file (imgpack.toml)"),
        "configuration-file-imgpacktoml"
    );
    let twice = anchors("# A\n\n## Go\n\n## Go\n");
    assert!(twice.contains("go") && twice.contains("go-1"), "{twice:?}");
    // A heading-like comment in a code block is no heading.
    assert!(!anchors("```toml\n# not a heading\n```\n").contains("not-a-heading"));
}

// ---------------------------------------------------------------- flags

/// The flags each command's `--help` lists; `""` is `imgpack` itself.
struct Help(BTreeMap<String, BTreeSet<String>>);

impl Help {
    fn read() -> Self {
        Self::read_with_defaults().0
    }

    /// Also each command's `[default: …]` values, by flag.
    fn read_with_defaults() -> (Self, BTreeMap<String, BTreeMap<String, String>>) {
        let top = help(&[]);
        let mut commands = BTreeMap::new();
        let mut defaults = BTreeMap::new();
        commands.insert(String::new(), option_flags(&top));
        let listed = top
            .lines()
            .skip_while(|line| !line.starts_with("Commands:"))
            .skip(1)
            .take_while(|line| !line.trim().is_empty())
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| *name != "help");
        for name in listed {
            let text = help(&[name]);
            commands.insert(name.to_owned(), option_flags(&text));
            defaults.insert(name.to_owned(), option_defaults(&text));
        }
        assert!(
            commands.contains_key("build"),
            "no build command in:\n{top}"
        );
        (Help(commands), defaults)
    }

    fn is_command(&self, word: &str) -> bool {
        !word.is_empty() && self.0.contains_key(word)
    }
}

fn help(command: &[&str]) -> String {
    let output = run_expect(imgpack().args(command).arg("--help"), true);
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// `-o, --output <SPEC>` → `-o`, `--output`: the flags of the option lines.
fn option_flags(help: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for line in help.lines().map(str::trim_start) {
        if !line.starts_with('-') {
            continue;
        }
        for token in line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
        {
            if !token.starts_with('-') {
                break;
            }
            flags.insert(token.split('=').next().unwrap().to_owned());
        }
    }
    flags
}

/// `--jobs <N>` … `[default: 4]` → `--jobs`: `4`: the default clap prints
/// for each option, from its option line to the next.
fn option_defaults(help: &str) -> BTreeMap<String, String> {
    let mut defaults = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') {
            current = option_flags(trimmed)
                .into_iter()
                .find(|flag| flag.starts_with("--"));
        }
        let (Some(flag), Some(at)) = (&current, line.find("[default: ")) else {
            continue;
        };
        let value = &line[at + "[default: ".len()..];
        if let Some(end) = value.find(']') {
            defaults.insert(flag.clone(), value[..end].to_owned());
        }
    }
    defaults
}

/// The rows of every flag table (a header with `Flag` and `Default`): the
/// command its section is about (see `page_flags`), the first cell's first
/// flag and the text of the Default cell.
fn default_cells(text: &str, help: &Help) -> Vec<(String, String, String)> {
    let mut rows = Vec::new();
    let mut headings: Vec<(HeadingLevel, Option<String>)> = Vec::new();
    let mut heading_text: Option<String> = None;
    let mut cells: Vec<String> = Vec::new();
    let mut default_column: Option<usize> = None;
    for event in parser(text) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                headings.retain(|(l, _)| *l < level);
                headings.push((level, None));
                heading_text = Some(String::new());
            }
            Event::End(TagEnd::Heading(_)) => {
                let named = scan(&heading_text.take().unwrap_or_default(), help, false, false)
                    .into_iter()
                    .find_map(|item| match item {
                        Item::Imgpack(c) if !c.is_empty() => Some(c),
                        _ => None,
                    });
                headings.last_mut().unwrap().1 = named;
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading_text.as_mut() {
                    h.push_str(&t);
                } else if let Some(cell) = cells.last_mut() {
                    cell.push_str(&t);
                }
            }
            Event::Start(Tag::TableCell) => cells.push(String::new()),
            Event::Start(Tag::Table(_)) => default_column = None,
            Event::End(TagEnd::TableHead) => {
                let has_flags = cells.first().is_some_and(|c| c.contains("Flag"));
                default_column = cells
                    .iter()
                    .position(|c| c.trim() == "Default")
                    .filter(|_| has_flags);
                cells.clear();
            }
            Event::End(TagEnd::TableRow) => {
                let flag = cells
                    .first()
                    .and_then(|c| c.split_whitespace().find(|w| w.starts_with("--")))
                    .map(|w| w.trim_end_matches(',').to_owned());
                if let (Some(column), Some(flag)) = (default_column, flag) {
                    let command = headings
                        .iter()
                        .rev()
                        .find_map(|(_, c)| c.clone())
                        .unwrap_or_else(|| DEFAULT_COMMAND.to_owned());
                    rows.push((
                        command,
                        flag,
                        cells.get(column).cloned().unwrap_or_default(),
                    ));
                }
                cells.clear();
            }
            _ => {}
        }
    }
    rows
}

/// What a piece of text says, in order: the items the rule works on.
#[derive(Clone, Debug, PartialEq)]
enum Item {
    /// `imgpack CMD` (`""` for `imgpack --help`).
    Imgpack(String),
    /// The name of another program.
    Other,
    /// The end of a sentence.
    Stop,
    /// A flag whose command is not decided yet.
    Flag(String),
    /// A flag that belongs to this command.
    FlagOf(String, String),
}

/// Characters after which a flag may start (so `--cmd=--listen` holds one flag).
fn flag_may_start_after(c: Option<char>) -> bool {
    c.is_none_or(|c| c.is_whitespace() || "[(`|\"'{,".contains(c))
}

/// The flag at the start of `rest`, if one is there: `--name` or, with
/// `short`, `-x`.
fn flag_at(rest: &str, short: bool) -> Option<String> {
    let bytes = rest.as_bytes();
    if rest.starts_with("--")
        && bytes
            .get(2)
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        let len = rest[2..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            .map_or(rest.len(), |i| i + 2);
        return Some(rest[..len].to_owned());
    }
    let single = bytes.first() == Some(&b'-')
        && bytes.get(1).is_some_and(u8::is_ascii_alphabetic)
        && bytes
            .get(2)
            .is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'));
    (short && single).then(|| rest[..2].to_owned())
}

/// The word at the start of `rest` (letters, digits, `-`, `_`).
fn word_at(rest: &str) -> &str {
    let len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(rest.len());
    &rest[..len]
}

/// Scans `text` for mentions, other programs, sentence ends and flags.
fn scan(text: &str, help: &Help, short: bool, prose: bool) -> Vec<Item> {
    let mut items = Vec::new();
    let mut previous: Option<char> = None;
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        let c = rest.chars().next().unwrap();
        let starts_word = previous.is_none_or(|p| !(p.is_alphanumeric() || "-_/.$".contains(p)));
        let mut step = c.len_utf8();
        let is_flag_value = text[..at]
            .split_whitespace()
            .next_back()
            .is_some_and(|token| flag_at(token, true).is_some());
        if starts_word
            && !is_flag_value
            && rest.starts_with("imgpack")
            && rest[7..].starts_with([' ', '\t'])
        {
            let after = rest[7..].trim_start_matches([' ', '\t']);
            let word = word_at(after);
            if help.is_command(word) {
                items.push(Item::Imgpack(word.to_owned()));
                step = rest.len() - after.len() + word.len();
            } else if after.starts_with('-') {
                items.push(Item::Imgpack(String::new()));
                step = rest.len() - after.len();
            }
        } else if starts_word && c.is_ascii_alphabetic() {
            let word = word_at(rest);
            if OTHER_PROGRAMS.contains(&word) {
                items.push(Item::Other);
            }
            step = word.len();
        } else if flag_may_start_after(previous) && c == '-' {
            if let Some(flag) = flag_at(rest, short) {
                step = flag.len();
                items.push(Item::Flag(flag));
            } else {
                step = word_at(rest).len().max(1);
            }
        } else if prose
            && c == '.'
            && rest[1..].chars().next().is_none_or(char::is_whitespace)
            && !abbreviation(&text[..at])
        {
            items.push(Item::Stop);
        }
        previous = text[..at + step].chars().next_back();
        at += step;
    }
    items
}

/// `e.g.` and `i.e.` do not end a sentence.
fn abbreviation(before: &str) -> bool {
    before.ends_with("e.g") || before.ends_with("i.e")
}

/// Flags in a code block: those on the command line of an `imgpack CMD`
/// (continued over lines ending in `\` and over deeper-indented lines).
fn code_block_flags(code: &str, help: &Help) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut current: Option<(String, usize)> = None;
    let mut continued = false;
    for line in code.lines() {
        let indent = line.len() - line.trim_start().len();
        let continues = !line.trim().is_empty()
            && current
                .as_ref()
                .is_some_and(|(_, start)| continued || indent > *start);
        if !continues {
            current = None;
        }
        for item in scan(line, help, true, false) {
            match item {
                Item::Imgpack(command) => current = Some((command, indent)),
                Item::Flag(flag) => {
                    if let Some((command, _)) = &current {
                        found.push((command.clone(), flag));
                    }
                }
                _ => {}
            }
        }
        continued = line.trim_end().ends_with('\\');
    }
    found
}

/// The items of an inline code span.
fn code_span_items(code: &str, help: &Help) -> Vec<Item> {
    let items = scan(code, help, true, false);
    let first_word_is_flag = code.trim_start().starts_with('-');
    let mut out = Vec::new();
    let mut command: Option<String> = None;
    for item in items {
        match item {
            Item::Imgpack(c) => {
                command = Some(c.clone());
                out.push(Item::Imgpack(c));
            }
            Item::Flag(flag) => match &command {
                Some(c) => out.push(Item::FlagOf(c.clone(), flag)),
                // A lone flag is decided by its context; in another program's
                // command line (`cargo build --release`) it is not ours.
                None if first_word_is_flag && !flag.starts_with("--") => {}
                None if first_word_is_flag => out.push(Item::Flag(flag)),
                None => {}
            },
            Item::Other if out.is_empty() => out.push(Item::Other),
            _ => {}
        }
    }
    out
}

/// Decides the command of each flag of one paragraph, list item, table row or heading.
fn decide(items: &[Item], section: Option<&str>, default: &str, found: &mut Vec<(String, String)>) {
    let mut sentence: Option<Option<String>> = None; // last mention in this sentence
    let mut paragraph: Option<String> = None; // last imgpack mention in the block
    for item in items {
        match item {
            Item::Imgpack(c) => {
                sentence = Some(Some(c.clone()));
                paragraph = Some(c.clone());
            }
            Item::Other => sentence = Some(None),
            Item::Stop => sentence = None,
            Item::FlagOf(c, flag) => found.push((c.clone(), flag.clone())),
            Item::Flag(flag) => {
                let command = match &sentence {
                    Some(Some(c)) => Some(c.clone()),
                    Some(None) => None,
                    None => Some(
                        paragraph
                            .clone()
                            .or(section.map(str::to_owned))
                            .unwrap_or_else(|| default.to_owned()),
                    ),
                };
                if let Some(c) = command {
                    found.push((c, flag.clone()));
                }
            }
        }
    }
}

/// Every (command, flag) a page gives, by the rule in CONTRIBUTING.md.
fn page_flags(text: &str, default: &str, help: &Help) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut headings: Vec<(HeadingLevel, Option<String>)> = Vec::new();
    let mut block: Vec<Item> = Vec::new();
    let mut code_block: Option<String> = None;
    let section = |headings: &[(HeadingLevel, Option<String>)]| {
        headings.iter().rev().find_map(|(_, c)| c.clone())
    };
    for event in parser(text) {
        match event {
            Event::Start(Tag::CodeBlock(_)) => code_block = Some(String::new()),
            Event::End(TagEnd::CodeBlock) => {
                found.extend(code_block_flags(
                    &code_block.take().unwrap_or_default(),
                    help,
                ));
            }
            Event::Text(t) if code_block.is_some() => code_block.as_mut().unwrap().push_str(&t),
            Event::Text(t) => block.extend(scan(&t, help, false, true)),
            Event::Code(c) => block.extend(code_span_items(&c, help)),
            Event::SoftBreak | Event::HardBreak => block.extend(scan("\n", help, false, true)),
            Event::Start(Tag::Heading { level, .. }) => {
                decide(&block, section(&headings).as_deref(), default, &mut found);
                block.clear();
                headings.retain(|(l, _)| *l < level);
                headings.push((level, None));
            }
            Event::End(TagEnd::Heading(_)) => {
                let named = block.iter().find_map(|item| match item {
                    Item::Imgpack(c) if !c.is_empty() => Some(c.clone()),
                    _ => None,
                });
                headings.last_mut().unwrap().1 = named;
                decide(&block, section(&headings).as_deref(), default, &mut found);
                block.clear();
            }
            Event::Start(Tag::Paragraph | Tag::Item | Tag::TableHead | Tag::TableRow)
            | Event::End(TagEnd::Paragraph | TagEnd::Item | TagEnd::TableHead | TagEnd::TableRow) =>
            {
                decide(&block, section(&headings).as_deref(), default, &mut found);
                block.clear();
            }
            _ => {}
        }
    }
    decide(&block, section(&headings).as_deref(), default, &mut found);
    found
}

/// The command a flag on its own belongs to when nothing else names one.
const DEFAULT_COMMAND: &str = "build";

fn unknown_flags(page: &Path, text: &str, help: &Help) -> Vec<String> {
    page_flags(text, DEFAULT_COMMAND, help)
        .into_iter()
        .filter(|(command, flag)| !help.0[command].contains(flag))
        .map(|(command, flag)| {
            let shown = if command.is_empty() {
                "imgpack".to_owned()
            } else {
                format!("imgpack {command}")
            };
            format!("{}: {flag} is not in `{shown} --help`", page.display())
        })
        .collect()
}

#[test]
fn every_flag_the_docs_mention_exists() {
    let help = Help::read();
    let mut checked = 0;
    let mut problems = Vec::new();
    for (page, text) in pages() {
        checked += page_flags(&text, DEFAULT_COMMAND, &help).len();
        problems.extend(unknown_flags(&page, &text, &help));
    }
    assert!(
        problems.is_empty(),
        "flags the docs mention but imgpack does not have:\n{}",
        problems.join("\n")
    );
    // The rule must see the flags at all: the docs mention hundreds.
    assert!(checked > 200, "only {checked} flags checked");
}

#[test]
fn the_rule_decides_each_flags_command_as_contributing_says() {
    let help = Help::read();
    let flags = |text: &str| page_flags(text, "build", &help);
    let pair = |c: &str, f: &str| (c.to_owned(), f.to_owned());
    let none: Vec<(String, String)> = Vec::new();
    // Code blocks: the imgpack command line only, continued by `\` or indentation.
    let block = "```sh\ncargo build --release\nimgpack build \\\n  --binary x=y\nskopeo copy --all a b\n```\n";
    assert_eq!(flags(block), [pair("build", "--binary")]);
    let yaml = "```yaml\n  - imgpack push\n      --tag x\n  - go build --ldflags x\n```\n";
    assert_eq!(flags(yaml), [pair("push", "--tag")]);
    // Spans: after `imgpack CMD`, or a lone flag decided by the sentence,
    // the paragraph, the heading, the page.
    assert_eq!(flags("Run `imgpack login -u x`.\n"), [pair("login", "-u")]);
    assert_eq!(flags("Run `cargo build --release`.\n"), none);
    assert_eq!(flags("With skopeo (`--all`), and `imgpack push`.\n"), none);
    assert_eq!(
        flags("`imgpack push` takes `--tag`. It also takes `--jobs`.\n"),
        [pair("push", "--tag"), pair("push", "--jobs")]
    );
    assert_eq!(
        flags("## `imgpack login`\n\nGive `--username`.\n"),
        [pair("login", "--username")]
    );
    assert_eq!(
        flags("# Other\n\nGive `--username`.\n"),
        [pair("build", "--username")]
    );
    assert_eq!(
        flags("See `imgpack --help` or `--cmd=--listen=:8080`.\n"),
        [pair("", "--help"), pair("", "--cmd")]
    );
    // And a renamed flag is caught.
    let problems = unknown_flags(
        Path::new("x.md"),
        "Use `imgpack build --chunk-mib 8`.\n",
        &help,
    );
    assert_eq!(
        problems,
        ["x.md: --chunk-mib is not in `imgpack build --help`"]
    );
}

#[test]
fn every_default_in_a_flag_table_is_the_one_help_shows() {
    let (help, defaults) = Help::read_with_defaults();
    let mut checked = 0;
    let mut problems = Vec::new();
    for (page, text) in pages() {
        for (command, flag, cell) in default_cells(&text, &help) {
            // An empty cell states nothing (as in "as for imgpack build").
            let Some(default) = defaults
                .get(&command)
                .and_then(|d| d.get(&flag))
                .filter(|_| !cell.trim().is_empty())
            else {
                continue;
            };
            checked += 1;
            let words: Vec<&str> = cell
                .split(|c: char| c.is_whitespace() || ",;()".contains(c))
                .collect();
            if !words.contains(&default.as_str()) {
                problems.push(format!(
                    "{}: {flag} has the default '{cell}', `imgpack {command} --help` says {default}",
                    page.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "defaults the docs and --help disagree on:\n{}",
        problems.join("\n")
    );
    // --jobs, --chunk-size and --retry-timeout have tables in the docs.
    assert!(checked >= 3, "only {checked} defaults checked");
}

// ---------------------------------------------------------------- commands

/// The text of a page's section, from its heading to the next of the same level.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("no heading {heading}"));
    let level = heading.split(' ').next().unwrap();
    let rest = &text[start + heading.len()..];
    let end = rest
        .find(&format!("\n{level} "))
        .map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

#[test]
fn the_try_it_locally_config_starts_a_registry_imgpack_pushes_to() {
    if !have_tool("docker-registry") {
        return;
    }
    let text = std::fs::read_to_string(workspace_root().join("docs/registries.md")).unwrap();
    let try_it = section(&text, "## Try it locally");
    let config = try_it
        .split_once("<<'EOF'\n")
        .and_then(|(_, rest)| rest.split_once("\nEOF\n"))
        .expect("a config.yml written with <<'EOF'")
        .0;
    assert_eq!(config.lines().count(), 4, "four lines of config:\n{config}");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = config
        .replace("127.0.0.1:5000", &format!("127.0.0.1:{port}"))
        .replace("/tmp/registry", dir.path().to_str().unwrap());
    std::fs::write(dir.path().join("config.yml"), config).unwrap();
    let mut registry = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let host = format!("127.0.0.1:{port}");
    let patience = std::time::Duration::from_secs(30);
    let ping = get_when_up(&host, "/v2/", patience);
    assert_eq!((ping.status, ping.text().trim()), (200, "{}"));
    // The section's own push line, as written but for the port, run in a directory holding
    // a copy of fixtures/rust-hello where the line expects it (a checkout of this repository).
    let push_line = try_it
        .lines()
        .find(|line| line.starts_with("imgpack build ") && line.contains("--push"))
        .expect("a documented imgpack build --push line");
    let line = push_line.replace("localhost:5000", &format!("localhost:{port}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(
        words.contains(&"linux/amd64,linux/arm64"),
        "the documented push is two platforms: {push_line}"
    );
    let checkout = dir.path().join("checkout");
    copy_project(
        &workspace_root().join("fixtures/rust-hello"),
        &checkout.join("fixtures/rust-hello"),
    );
    run_expect(imgpack().current_dir(&checkout).args(&words[1..]), true);
    let tags = get_when_up(&host, "/v2/rust-hello/tags/list", patience).text();
    registry.kill().unwrap();
    registry.wait().unwrap();
    // What the section says `curl …/tags/list` shows: v1 and one `sha256-…` referrers tag per
    // platform manifest (each holding its SBOM and provenance), counted from the docs' line.
    let documented = try_it
        .lines()
        .find(|line| line.starts_with("curl ") && line.contains("tags/list"))
        .and_then(|line| line.split_once('#'))
        .map(|(_, shown)| shown.trim())
        .expect("a documented tags/list answer");
    let referrers_documented = documented.matches("\"sha256-").count();
    assert_eq!(referrers_documented, 2, "{documented}");
    let listed: serde_json::Value = serde_json::from_str(&tags).unwrap();
    let listed: Vec<&str> = imgpack_e2e::strings(&listed["tags"]);
    let referrer_tags = listed.iter().filter(|t| t.starts_with("sha256-")).count();
    assert!(listed.contains(&"v1"), "{tags}");
    assert_eq!(
        (referrer_tags, listed.len()),
        (referrers_documented, referrers_documented + 1),
        "the docs show {documented}; the registry has {tags}"
    );
    assert!(
        dir.path()
            .join("data/docker/registry/v2/repositories/rust-hello")
            .is_dir(),
        "the registry did not store under the config's rootdirectory"
    );
}

/// Every run of `go build … -o out/…` the docs give, as shell lines per
/// code block (a `for arch` loop's body once per architecture, in its order).
fn documented_go_builds() -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    for page in ["docs/building.md", "docs/ci.md"] {
        let text = std::fs::read_to_string(workspace_root().join(page)).unwrap();
        for block in text.split("```").skip(1).step_by(2) {
            let mut lines = Vec::new();
            for line in block.lines().map(str::trim) {
                if !(line.contains("go build") && line.contains(" -o out/")) {
                    continue;
                }
                if line.contains("$arch") {
                    for arch in ["amd64", "arm64"] {
                        lines.push(format!("arch={arch}; {line}"));
                    }
                } else {
                    lines.push(line.to_owned());
                }
            }
            if !lines.is_empty() {
                blocks.push(lines);
            }
        }
    }
    blocks
}

/// A fresh git checkout of a Go module with `./cmd/api`, everything committed.
fn go_checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("cmd/api")).unwrap();
    std::fs::write(d.join("go.mod"), "module example.com/api\n\ngo 1.19\n").unwrap();
    std::fs::write(
        d.join("cmd/api/main.go"),
        "package main\n\nfunc main() {}\n",
    )
    .unwrap();
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["commit", "-q", "-m", "api"],
    ] {
        let status = std::process::Command::new("git")
            .current_dir(d)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }
    dir
}

/// Runs the lines in `dir`; returns the files in `out/`.
fn run_lines(dir: &Path, lines: &[String]) -> BTreeMap<String, Vec<u8>> {
    for line in lines {
        let output = std::process::Command::new("sh")
            .current_dir(dir)
            .args(["-c", line])
            .env_remove("GOFLAGS")
            .output()
            .unwrap();
        assert!(output.status.success(), "{line}: {}", stderr(&output));
    }
    std::fs::read_dir(dir.join("out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn documented_go_builds_give_the_same_binaries_when_run_again_in_a_git_checkout() {
    if !have_tool("go") || !have_tool("git") {
        return;
    }
    let blocks = documented_go_builds();
    assert!(blocks.len() >= 3, "{blocks:?}");
    for lines in blocks {
        // In a fresh checkout, then again over the first run's out/, as a
        // rerun of the CI job or of the docs' steps does.
        let checkout = go_checkout();
        let first = run_lines(checkout.path(), &lines);
        let second = run_lines(checkout.path(), &lines);
        assert_eq!(first.len(), lines.len(), "{lines:?}");
        for (path, bytes) in &first {
            assert!(
                second[path] == *bytes,
                "{path} changed when {lines:?} ran again in the same checkout (Go's VCS stamp)"
            );
        }
    }
}
