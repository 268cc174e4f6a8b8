//! The man pages under `man/` are generated from the CLI definition (`src/cli.rs`): `pipe.1`
//! and one page per command (`pipe-bake.1`, `pipe-box-build.1`, ...). This test renders them in
//! memory and fails when a file is missing, stale or left over; `PIPE_BLESS=1` rewrites them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::CommandFactory;

/// Each page's file name and text: the command, then its subcommands, depth first.
fn pages() -> BTreeMap<String, Vec<u8>> {
    let mut cmd = pipe::cli::Cli::command();
    cmd.build();
    let mut out = BTreeMap::new();
    render(&cmd, "pipe", &mut out);
    out
}

fn render(cmd: &clap::Command, name: &str, out: &mut BTreeMap<String, Vec<u8>>) {
    // clap takes `&'static str` names (its `string` feature is off): a few leaked bytes here.
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let page = cmd
        .clone()
        .name(leak(name.to_string()))
        .bin_name(leak(name.replace('-', " ")));
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut text)
        .expect("render a man page");
    out.insert(format!("{name}.1"), text);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        render(sub, &format!("{name}-{}", sub.get_name()), out);
    }
}

#[test]
fn man_pages_are_current() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("man");
    let pages = pages();
    if std::env::var_os("PIPE_BLESS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "1") {
                std::fs::remove_file(path).unwrap();
            }
        }
        for (name, text) in &pages {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    let mut problems = Vec::new();
    for (name, text) in &pages {
        match std::fs::read(dir.join(name)) {
            Ok(kept) if &kept == text => {}
            Ok(_) => problems.push(format!("man/{name} is stale")),
            Err(_) => problems.push(format!("man/{name} is missing")),
        }
    }
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".1") && !pages.contains_key(&name) {
            problems.push(format!("man/{name} names no command"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\nrun `PIPE_BLESS=1 cargo test --test man` to regenerate man/",
        problems.join("\n")
    );
    // Every command has its page, and the top page lists it.
    let top = String::from_utf8_lossy(&pages["pipe.1"]).into_owned();
    for cmd in ["bake", "lint", "schema", "import"] {
        assert!(pages.contains_key(&format!("pipe-{cmd}.1")), "{cmd}");
        assert!(top.contains(&format!("pipe\\-{cmd}(1)")), "{cmd}: {top}");
    }
}
