//! Endpoints you can trust: a handoff (and a kept replica) names a port that its own server
//! listens on. A foreign server answering `/health` 200 on the port fails the probe, the
//! handoff step and the liveness check; two projects applying at once with auto ports never
//! hand off each other's servers.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::{assert_gone, json_file, Pool, Rig, FAKE};
use provision_plan::step::PortSpec;
use provision_plan::{StepOutputs, StepSpec};
use provision_steps_spawn as spawn;
use provision_steps_spawn::HandoffFile;
use provision_steps_spawn::{port, port_reservation};

/// A process this test started; killed and reaped when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fake llama-server that is not provision's, listening on `port`, ready.
fn foreign_server(model: &Path, port: u16) -> Started {
    let child = Command::new(FAKE)
        .args(["--metrics", "--port", &port.to_string(), "--model"])
        .arg(model)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Started(child);
    for _ in 0..1000 {
        if health(port) == Some(200) {
            return server;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the foreign server on port {port} never answered");
}

fn health(port: u16) -> Option<u16> {
    spawn::http::Http::new(Duration::from_secs(2), false)
        .get(&format!("http://127.0.0.1:{port}/health"), None)
        .map(|r| r.status)
        .ok()
}

/// Auto ports from `base` (a free port, away from other tests' servers at 8080 and up).
fn auto_ports_from(rig: &mut Rig, base: u16) {
    for step in &mut rig.ws.plan.steps {
        if let StepSpec::Spawn(s) = &mut step.spec {
            s.port = PortSpec::Auto { base };
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_foreign_server_answering_health_on_our_port_fails_the_probe_and_is_never_handed_off() {
    let mut rig = Rig::new(&Pool {
        // Our server binds late: meanwhile someone else takes its port.
        env: &[("FAKE_BIND_DELAY_MS", "20000")],
        ..Pool::default()
    });
    auto_ports_from(&mut rig, free_port());
    rig.run("spawn:fake/r0").unwrap();
    let ours = rig.server(0);
    let port = rig.spawned(0).port;
    let foreign = foreign_server(&rig.model, port);
    let foreign_pid = foreign.0.id();

    let err = rig.run("probe:fake/r0").unwrap_err();
    assert!(
        err.message.contains(&format!("port {port}"))
            && err.message.contains(&format!("pid {foreign_pid}"))
            && err.message.contains("fake-llama-server")
            && err.message.contains(&format!("pid {}", ours.pid)),
        "the holder (pid and command) and our server are named: {}",
        err.message
    );
    let tail = err.tail.clone().unwrap_or_default();
    assert!(tail.contains("fake llama-server"), "its own log: {tail}");
    // Ours could never serve on that port: it is stopped, and nothing is handed off.
    assert_gone(&ours);
    assert!(rig.run("handoff:fake/r0").is_err());
    assert!(!rig.handoff_file(0).exists());
    assert_eq!(health(port), Some(200), "the foreign server is untouched");
}

#[test]
fn the_handoff_and_the_liveness_check_refuse_a_port_that_another_process_holds() {
    let mut rig = Rig::new(&Pool::default());
    auto_ports_from(&mut rig, free_port());
    rig.up(0).unwrap();
    let ours = rig.server(0);
    let other = free_port();
    let foreign = foreign_server(&rig.model, other);
    let foreign_pid = foreign.0.id();
    // The state says our server is on a port that another server answers on (an apply killed
    // at the wrong moment, a port taken while the server was down).
    let probe = rig.state.steps.get_mut("probe:fake/r0").unwrap();
    let Some(StepOutputs::Probe(probed)) = &mut probe.outputs else {
        unreachable!()
    };
    probed.url = format!("http://127.0.0.1:{other}");

    let StepSpec::Probe(p) = rig.step("probe:fake/r0").spec.clone() else {
        unreachable!()
    };
    let why = spawn::check_probe(&p, &rig.cx("probe:fake/r0")).unwrap_err();
    assert!(
        why.contains(&format!("pid {foreign_pid}")) && why.contains(&format!("port {other}")),
        "{why}"
    );

    std::fs::remove_file(rig.handoff_file(0)).unwrap();
    let err = rig.run("handoff:fake/r0").unwrap_err();
    assert!(
        err.message.contains(&format!("pid {foreign_pid}"))
            && err.message.contains(&format!("pid {}", ours.pid)),
        "{}",
        err.message
    );
    assert!(!rig.handoff_file(0).exists(), "nothing handed off");
}

/// Run as a child process by `two_projects_applying_at_once_hand_off_only_their_own_servers`:
/// one project (its own runtime dir and state) with `PROVISION_TEST_REPLICAS` replicas on auto
/// ports from `PROVISION_TEST_BASE`, started when stdin says `go`, kept until stdin closes.
#[test]
#[ignore = "a helper run as a child process by another test"]
fn project_child() {
    let base: u16 = std::env::var("PROVISION_TEST_BASE")
        .unwrap()
        .parse()
        .unwrap();
    let replicas: u32 = std::env::var("PROVISION_TEST_REPLICAS")
        .unwrap()
        .parse()
        .unwrap();
    let mut rig = Rig::new(&Pool {
        replicas,
        // Servers bind a while after they start, and one that finds its port taken lingers
        // (as a server freeing its GPU does): the race of the issue, every time.
        env: &[
            ("FAKE_BIND_DELAY_MS", "1500"),
            ("FAKE_BIND_FAIL_LINGER_MS", "20000"),
        ],
        ..Pool::default()
    });
    auto_ports_from(&mut rig, base);
    println!("READY {}", rig.runtime().display());
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    // As the executor does: every replica spawned, then probed, then handed off.
    let mut failed = Vec::new();
    for r in 0..replicas {
        if let Err(e) = rig.run(&format!("spawn:fake/r{r}")) {
            failed.push(format!("spawn r{r}: {}", e.message));
        }
    }
    for r in 0..replicas {
        for step in ["probe", "handoff"] {
            if let Err(e) = rig.run(&format!("{step}:fake/r{r}")) {
                failed.push(format!("{step} r{r}: {}", e.message));
                break;
            }
        }
    }
    println!("DONE {}", serde_json::to_string(&failed).unwrap());
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
}

struct Project {
    child: Started,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Project {
    fn start(base: u16, replicas: u32) -> Project {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "project_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PROVISION_TEST_BASE", base.to_string())
            .env("PROVISION_TEST_REPLICAS", replicas.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Project {
            child: Started(child),
            stdin,
            stdout,
        }
    }

    /// The rest of the line starting with `tag`.
    fn expect(&mut self, tag: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).unwrap() == 0 {
                panic!("project {} ended before {tag}", self.child.0.id());
            }
            // The harness may have printed `test project_child ... ` on the same line.
            if let Some(at) = line.find(tag) {
                return line[at + tag.len()..].trim().to_string();
            }
        }
    }

    fn go(&mut self) {
        writeln!(self.stdin.as_mut().unwrap(), "go").unwrap();
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // Its stdin closes: it stops its servers and exits.
        drop(self.stdin.take());
        let _ = self.child.0.wait();
    }
}

#[test]
fn two_projects_applying_at_once_hand_off_only_their_own_servers() {
    let (base, replicas) = (free_port(), 3);
    let mut projects = [
        Project::start(base, replicas),
        Project::start(base, replicas),
    ];
    let runtimes: Vec<PathBuf> = projects
        .iter_mut()
        .map(|p| PathBuf::from(p.expect("READY ")))
        .collect();
    for p in &mut projects {
        p.go();
    }
    let mut ports = Vec::new();
    for (p, runtime) in projects.iter_mut().zip(&runtimes) {
        let failed: Vec<String> = serde_json::from_str(&p.expect("DONE ")).unwrap();
        assert!(failed.is_empty(), "{}: {failed:?}", runtime.display());
        for r in 0..replicas {
            let path = runtime.join(format!("engines/llamacpp-fake-r{r}.json"));
            let file: HandoffFile = serde_json::from_value(json_file(&path)).unwrap();
            let port: u16 = file.url.rsplit(':').next().unwrap().parse().unwrap();
            let holder = port::holder(port);
            assert_eq!(
                holder.as_ref().map(|h| h.pid),
                file.pid,
                "{} names port {port} and pid {:?}; the port is held by {holder:?}",
                path.display(),
                file.pid
            );
            ports.push(port);
        }
    }
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 2 * replicas as usize, "{ports:?}");
}

#[test]
fn a_server_that_cannot_bind_its_port_fails_naming_who_holds_it() {
    let mut rig = Rig::new(&Pool {
        env: &[("FAKE_BIND_DELAY_MS", "300")],
        ..Pool::default()
    });
    auto_ports_from(&mut rig, free_port());
    rig.run("spawn:fake/r0").unwrap();
    let port = rig.spawned(0).port;
    // Someone takes the port first and answers nothing (connections accepted and dropped).
    let thief = TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for conn in thief.incoming() {
            drop(conn);
        }
    });
    let err = rig.run("probe:fake/r0").unwrap_err();
    assert!(
        err.message.contains("exited while loading")
            && err.message.contains(&format!(
                "port {port} is held by pid {}",
                std::process::id()
            )),
        "{}",
        err.message
    );
    assert!(
        err.tail.unwrap_or_default().contains("couldn't bind"),
        "its log says why"
    );
    assert!(!rig.handoff_file(0).exists());
}

#[test]
fn a_server_holds_its_port_reservation_until_it_exits_and_no_other_server_does() {
    let mut rig = Rig::new(&Pool {
        replicas: 2,
        // Loading for the whole test: neither server ever listens.
        env: &[("FAKE_NEVER_BIND", "1")],
        ..Pool::default()
    });
    auto_ports_from(&mut rig, free_port());
    rig.run("spawn:fake/r0").unwrap();
    rig.run("spawn:fake/r1").unwrap();
    let (s0, s1) = (rig.server(0), rig.server(1));
    let port_of = |r: u32| rig.spawned(r).port;
    let (p0, p1) = (port_of(0), port_of(1));
    // The apply that chose them lets go (it was killed, or its probes gave up).
    port::release(p0);
    port::release(p1);
    // Still loading, not listening: each port stays reserved, by its own server.
    for (port, server) in [(p0, &s0), (p1, &s1)] {
        assert!(
            !port::reserve("127.0.0.1", port),
            "port {port} of a loading server was handed out again"
        );
        let holder = port_reservation::holder(port).map(|h| h.pid);
        assert_eq!(holder, Some(server.pid), "port {port}");
    }
    let chosen = port::reserve_auto("127.0.0.1", p0.min(p1), None, &Default::default()).unwrap();
    port::release(chosen);
    assert!(chosen != p0 && chosen != p1, "the auto choice skips both");

    // r0's server exits: its port is free again, although r1's server still runs (it did not
    // inherit r0's reservation).
    spawn::stop_server(&rig.spawned(0).into(), Duration::from_secs(5)).unwrap();
    assert_gone(&s0);
    assert!(s1.is_running());
    assert!(port::reserve("127.0.0.1", p0), "freed with its server");
    port::release(p0);
    assert!(!port::reserve("127.0.0.1", p1));
}
