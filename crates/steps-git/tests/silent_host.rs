//! A git host that accepts the connection and then sends nothing fails the step in bounded time
//! (git's low-speed limit, which provision sets), instead of holding the apply forever. The
//! limit's time is shortened here through the environment provision leaves to the user.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use provision_plan::step::GitClone;
use provision_plan::StepSpec;
use provision_steps_git::{facts, RefLookup};
use provision_steps_testkit::{cpu_pool_config, Workspace};

#[test]
fn a_silent_host_fails_the_check_in_bounded_time() {
    // This test binary holds this one test: the variable reaches no other.
    std::env::set_var("GIT_HTTP_LOW_SPEED_TIME", "2");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept, read nothing, answer nothing; keep every connection open.
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming().flatten() {
            open.push(stream);
        }
    });
    let url = format!("http://127.0.0.1:{port}/repo.git");
    let ws = Workspace::new(&cpu_pool_config(&url, "main", false, ""));
    let spec: GitClone = match &ws.step("git-clone").spec {
        StepSpec::GitClone(g) => g.clone(),
        _ => unreachable!(),
    };
    let started = Instant::now();
    let got = facts(
        &spec,
        &ws.cx("git-clone", BTreeMap::new()),
        RefLookup::Refresh,
    );
    let took = started.elapsed();
    assert!(got.is_err(), "a silent host gave facts");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}
