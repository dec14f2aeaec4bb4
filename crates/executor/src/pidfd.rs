//! Signalling a process through a pidfd: a handle on one process, not on a number. Opened first,
//! then the process is checked (start time, boot, marker), then signalled through the handle: a
//! pid that is reused between the check and the signal is never hit (the handle still names the
//! process that exited, and the signal fails with `ESRCH`). Pids 0 and 1 are refused outright:
//! no process provision starts can have them, and `kill` on them reaches every process or the
//! caller's own group.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

/// `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9): the signal goes to the process group whose id is
/// the pidfd's process (the group it leads), named by the kernel's pid object, not by a number.
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// A handle on one process.
#[derive(Debug)]
pub struct Pidfd {
    pid: u32,
    fd: OwnedFd,
}

/// A pid that may be a process provision started: above 1, within `pid_t`.
pub fn valid_pid(pid: u64) -> bool {
    pid > 1 && pid <= i32::MAX as u64
}

impl Pidfd {
    /// A handle on the process that is `pid` now. Refuses pids 0 and 1 (`InvalidInput`).
    pub fn open(pid: u32) -> io::Result<Pidfd> {
        if !valid_pid(u64::from(pid)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pid {pid} is never signalled"),
            ));
        }
        let raw = Pid::from_raw(pid as i32).expect("checked above 1");
        let fd = pidfd_open(raw, PidfdFlags::empty()).map_err(io::Error::from)?;
        Ok(Pidfd { pid, fd })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Signal this very process (`ESRCH` once it has exited, whatever now holds its pid).
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        let sig = to_signal(sig)?;
        pidfd_send_signal(&self.fd, sig).map_err(io::Error::from)
    }

    /// Signal the process group this process leads, named by the kernel's object for it (not
    /// by a number that could be reused). `Unsupported` on kernels before 6.9.
    pub fn signal_group(&self, sig: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal(2) on a descriptor this value owns; no siginfo is passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                PIDFD_SIGNAL_PROCESS_GROUP,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, err));
        }
        Err(err)
    }
}

fn to_signal(sig: i32) -> io::Result<Signal> {
    match sig {
        libc::SIGTERM => Ok(Signal::TERM),
        libc::SIGKILL => Ok(Signal::KILL),
        libc::SIGINT => Ok(Signal::INT),
        libc::SIGHUP => Ok(Signal::HUP),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {sig} is not sent by provision"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_0_and_1_and_out_of_range_are_refused() {
        for pid in [0u32, 1, u32::MAX] {
            let err = Pidfd::open(pid).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "pid {pid}");
        }
        assert!(!valid_pid(1) && !valid_pid(0) && valid_pid(2));
    }

    #[test]
    fn a_handle_signals_its_process_and_not_a_later_one() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = Pidfd::open(child.id()).unwrap();
        fd.signal(libc::SIGKILL).unwrap();
        child.wait().unwrap();
        // Reaped: the pid is free; the handle still names the exited process.
        let err = fd.signal(libc::SIGKILL).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }
}
