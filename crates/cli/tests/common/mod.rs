//! What the CLI's process tests share: a child process that cannot outlive a failed test, and
//! the local services' endpoints.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

use std::process::{Child, Command, ExitStatus};

/// A `switchyard` process; killed if the test ends (or panics) before `terminate`.
pub struct Process(Option<Child>);

impl Process {
    pub fn new(child: Child) -> Process {
        Process(Some(child))
    }

    /// SIGTERM, then the exit status once the process has shut down.
    pub async fn terminate(mut self) -> ExitStatus {
        let mut child = self.0.take().unwrap();
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
        }
    }
}

/// A local service's endpoint from the environment `deploy/local/env.sh` sets.
pub fn service_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `deploy/local/up.sh && . deploy/local/env.sh`")
    })
}
