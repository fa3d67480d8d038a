//! Why isolation could not be set up, said once: the step that failed, the cause the kernel's
//! settings point to, and the setting that would allow it (docs/isolate.md, "When the kernel
//! refuses").

use std::fmt;

/// A step of setting the namespace up, in the order the holder takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Starting the holder (netproxy's own binary, run again).
    Start,
    /// `unshare(CLONE_NEWUSER)`.
    UserNamespace,
    /// Writing `deny` to `/proc/self/setgroups`.
    Setgroups,
    /// Writing `/proc/self/uid_map`.
    UidMap,
    /// Writing `/proc/self/gid_map`.
    GidMap,
    /// `unshare(CLONE_NEWNET)`.
    NetworkNamespace,
    /// Bringing `lo` up (rtnetlink).
    Loopback,
    /// Binding netproxy's listeners inside the namespace.
    Listen,
    /// Joining the namespaces to start the command (`setns`).
    Enter,
}

impl Step {
    /// The step's name in messages and on the holder's channel.
    pub const fn as_str(self) -> &'static str {
        match self {
            Step::Start => "start",
            Step::UserNamespace => "user_namespace",
            Step::Setgroups => "setgroups",
            Step::UidMap => "uid_map",
            Step::GidMap => "gid_map",
            Step::NetworkNamespace => "network_namespace",
            Step::Loopback => "loopback",
            Step::Listen => "listen",
            Step::Enter => "enter",
        }
    }

    /// Every step.
    pub const ALL: [Step; 9] = [
        Step::Start,
        Step::UserNamespace,
        Step::Setgroups,
        Step::UidMap,
        Step::GidMap,
        Step::NetworkNamespace,
        Step::Loopback,
        Step::Listen,
        Step::Enter,
    ];

    /// What the step does, for a message.
    fn doing(self) -> &'static str {
        match self {
            Step::Start => "starting the namespace holder",
            Step::UserNamespace => "creating a user namespace",
            Step::Setgroups => "writing /proc/self/setgroups in the new user namespace",
            Step::UidMap => "writing the uid map of the new user namespace",
            Step::GidMap => "writing the gid map of the new user namespace",
            Step::NetworkNamespace => "creating a network namespace",
            Step::Loopback => "bringing lo up in the new network namespace",
            Step::Listen => "binding the proxy's listeners inside the namespace",
            Step::Enter => "joining the namespaces to start the command",
        }
    }
}

impl std::str::FromStr for Step {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Step::ALL.into_iter().find(|x| x.as_str() == s).ok_or(())
    }
}

/// The kernel settings that decide whether an unprivileged process may make namespaces, as
/// read from `/proc/sys` (`None`: the file does not exist on this kernel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelSettings {
    /// `kernel.unprivileged_userns_clone` (Debian's and Ubuntu's switch).
    pub unprivileged_userns_clone: Option<u64>,
    /// `user.max_user_namespaces`.
    pub max_user_namespaces: Option<u64>,
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 23.10 and later).
    pub apparmor_restrict_unprivileged_userns: Option<u64>,
}

impl KernelSettings {
    /// The settings of this machine (of netproxy's own user namespace).
    pub fn read() -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        Self {
            unprivileged_userns_clone: read("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces: read("/proc/sys/user/max_user_namespaces"),
            apparmor_restrict_unprivileged_userns: read(
                "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            ),
        }
    }
}

/// Why `run --isolate` cannot isolate its command: netproxy exits 126 with this message
/// before the command starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot isolate the command: {doing} failed ({error}): {cause}")]
pub struct Refusal {
    /// The step that failed.
    pub step: Step,
    /// The system error, as text.
    pub error: String,
    doing: &'static str,
    /// The cause and the setting that would allow isolation.
    pub cause: String,
}

impl Refusal {
    /// The refusal of `step`, failed with `errno` (none: not a system error), diagnosed with
    /// the kernel's `settings`.
    pub fn diagnose(
        step: Step,
        errno: Option<i32>,
        error: impl fmt::Display,
        settings: &KernelSettings,
    ) -> Self {
        Self {
            step,
            error: error.to_string(),
            doing: step.doing(),
            cause: cause(step, errno, settings),
        }
    }

    /// Isolation needs Linux's namespaces.
    pub fn unsupported() -> Self {
        Self {
            step: Step::UserNamespace,
            error: format!("this is {}", std::env::consts::OS),
            doing: Step::UserNamespace.doing(),
            cause: "network isolation needs Linux user and network namespaces; run without --isolate (and without `isolate = true`) on this system".to_owned(),
        }
    }
}

const EPERM: i32 = 1;
const EACCES: i32 = 13;
const EINVAL: i32 = 22;
const ENOSPC: i32 = 28;
const ENOSYS: i32 = 38;
const EUSERS: i32 = 87;

fn cause(step: Step, errno: Option<i32>, k: &KernelSettings) -> String {
    let apparmor = k
        .apparmor_restrict_unprivileged_userns
        .is_some_and(|v| v != 0);
    let refused = matches!(errno, Some(EPERM | EACCES));
    match step {
        Step::Start => "netproxy could not run its own binary again to hold the namespaces; check that /proc/self/exe is readable and executable".to_owned(),
        Step::UserNamespace => {
            if k.unprivileged_userns_clone == Some(0) {
                return "unprivileged user namespaces are disabled on this machine (sysctl kernel.unprivileged_userns_clone = 0); allow them with `sysctl -w kernel.unprivileged_userns_clone=1`".to_owned();
            }
            if k.max_user_namespaces == Some(0) {
                return "user namespaces are disabled on this machine (sysctl user.max_user_namespaces = 0); allow them with `sysctl -w user.max_user_namespaces=N` (N > 0, e.g. 15000)".to_owned();
            }
            match errno {
                Some(ENOSPC | EUSERS) => "the limit of user namespaces is reached (sysctl user.max_user_namespaces, or the nesting depth of 32); raise the sysctl or end the processes that hold namespaces".to_owned(),
                Some(EINVAL | ENOSYS) => "this kernel has no user namespaces (built without CONFIG_USER_NS); use a kernel that has them".to_owned(),
                _ if apparmor => apparmor_cause(),
                _ if refused => "the kernel refused to create a user namespace although no sysctl forbids it: most likely a seccomp filter (a container runtime's default profile refuses unshare and setns) or a security module; run netproxy outside such a container, or give the container a seccomp profile that allows unshare(CLONE_NEWUSER) and setns".to_owned(),
                _ => "the kernel refused to create a user namespace".to_owned(),
            }
        }
        Step::Setgroups | Step::UidMap | Step::GidMap | Step::NetworkNamespace | Step::Loopback if apparmor => apparmor_cause(),
        Step::NetworkNamespace if errno == Some(EINVAL) => "this kernel has no network namespaces (built without CONFIG_NET_NS); use a kernel that has them".to_owned(),
        Step::Setgroups | Step::UidMap | Step::GidMap | Step::NetworkNamespace | Step::Loopback if refused => "the user namespace was created but has no capabilities over itself: a security module restricts unprivileged user namespaces (AppArmor's kernel.apparmor_restrict_unprivileged_userns, or an SELinux or seccomp policy); allow netproxy to use user namespaces (an AppArmor profile for netproxy with `userns,`), or run where they are not restricted".to_owned(),
        Step::Enter if refused => "the kernel refused setns into the command's namespaces: a seccomp filter or security module refuses setns; allow setns for netproxy".to_owned(),
        _ => "the kernel refused a step of setting up the namespace".to_owned(),
    }
}

fn apparmor_cause() -> String {
    "AppArmor restricts unprivileged user namespaces on this machine (sysctl kernel.apparmor_restrict_unprivileged_userns = 1): the namespace is created without capabilities; give netproxy an AppArmor profile that allows `userns,` (docs/isolate.md), or set `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(step: Step, errno: i32, k: &KernelSettings) -> String {
        Refusal::diagnose(step, Some(errno), "Operation not permitted (os error 1)", k).to_string()
    }

    #[test]
    fn each_cause_names_its_setting() {
        let debian = KernelSettings {
            unprivileged_userns_clone: Some(0),
            ..KernelSettings::default()
        };
        assert!(
            msg(Step::UserNamespace, EPERM, &debian).contains("kernel.unprivileged_userns_clone=1")
        );
        let none = KernelSettings {
            max_user_namespaces: Some(0),
            ..KernelSettings::default()
        };
        let m = msg(Step::UserNamespace, ENOSPC, &none);
        assert!(m.contains("user.max_user_namespaces = 0"), "{m}");
        assert!(
            m.starts_with("cannot isolate the command: creating a user namespace failed"),
            "{m}"
        );
        let ubuntu = KernelSettings {
            apparmor_restrict_unprivileged_userns: Some(1),
            max_user_namespaces: Some(100),
            ..KernelSettings::default()
        };
        // Under AppArmor's restriction, unshare succeeds and a later step fails.
        for step in [
            Step::UidMap,
            Step::Setgroups,
            Step::Loopback,
            Step::NetworkNamespace,
        ] {
            let m = msg(step, EPERM, &ubuntu);
            assert!(m.contains("apparmor_restrict_unprivileged_userns"), "{m}");
        }
        let plain = KernelSettings {
            max_user_namespaces: Some(100),
            ..KernelSettings::default()
        };
        assert!(msg(Step::UserNamespace, EPERM, &plain).contains("seccomp"));
        assert!(msg(Step::UserNamespace, ENOSPC, &plain).contains("limit of user namespaces"));
        assert!(msg(Step::UidMap, EPERM, &plain).contains("no capabilities"));
        assert!(msg(Step::Enter, EPERM, &plain).contains("setns"));
        assert!(Refusal::unsupported().to_string().contains("Linux"));
    }

    #[test]
    fn steps_round_trip_their_names() {
        for s in Step::ALL {
            assert_eq!(s.as_str().parse::<Step>(), Ok(s));
        }
        assert!("nope".parse::<Step>().is_err());
    }
}
