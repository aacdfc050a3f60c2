//! Choosing a burn backend, and so a [`Device`], at run time among those compiled in.
//!
//! flow-rl is written against burn's runtime [`Device`]; which backends exist in a build is
//! decided by cargo features (`flex`, the default, `tch`, `tch-cuda`, `wgpu`, `vulkan`,
//! `cuda`). [`Backend`] names
//! them, parses a command-line flag such as `--backend wgpu` with an error that says how to
//! rebuild when the backend is missing, and honours burn's `BURN_DEVICE` variable as the
//! default, returning [`Error`]s where burn's own `Device::default()` would panic:
//!
//! ```
//! use flow_rl::backend::Backend;
//!
//! let backend: Backend = "flex".parse()?;
//! assert!(Backend::compiled().contains(&backend));
//! let device = backend.open()?; // the device, checked to run a computation
//! let _autodiff = device.autodiff(); // for training
//! assert!("no-such-backend".parse::<Backend>().is_err());
//! # Ok::<(), flow_rl::Error>(())
//! ```

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;

use burn::prelude::*;

use crate::error::{Error, Result};

/// The environment variable burn's `Device::default()` reads to pick a backend.
pub const BURN_DEVICE: &str = "BURN_DEVICE";

/// A burn backend that flow-rl can be built with, one per cargo feature.
///
/// Every variant exists in every build, so matching on it never depends on features; whether
/// a backend is usable in this build is [`Backend::is_compiled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// burn's pure-Rust CPU backend (feature `flex`, on by default).
    Flex,
    /// LibTorch (PyTorch's C++ library) on the CPU, through burn's `tch` backend (feature
    /// `tch`; built against PyTorch 2.9.0, see `scripts/libtorch_env.sh`).
    Tch,
    /// LibTorch on NVIDIA GPU 0, through a CUDA build of PyTorch 2.9.0 (feature `tch-cuda`,
    /// which is `tch` plus this choice).
    TchCuda,
    /// WebGPU through wgpu, on whichever graphics API the machine offers (feature `wgpu`).
    /// On Linux that is Vulkan first, so Mesa's software Vulkan (lavapipe) runs it on a CPU.
    Wgpu,
    /// wgpu pinned to Vulkan, with SPIR-V kernels: NVIDIA and other GPUs through their
    /// Vulkan driver (feature `vulkan`).
    Vulkan,
    /// burn's CUDA backend (feature `cuda`; its build downloads LLVM).
    Cuda,
}

impl Backend {
    /// Every backend, from the one burn's `Device::default()` prefers least (flex) to the one
    /// it prefers most (cuda).
    pub const ALL: [Backend; 6] = [
        Backend::Flex,
        Backend::Tch,
        Backend::TchCuda,
        Backend::Wgpu,
        Backend::Vulkan,
        Backend::Cuda,
    ];

    /// The backend's name, which is also its cargo feature and its `BURN_DEVICE` value.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Tch => "tch",
            Backend::TchCuda => "tch-cuda",
            Backend::Wgpu => "wgpu",
            Backend::Vulkan => "vulkan",
            Backend::Cuda => "cuda",
        }
    }

    /// Whether this build of flow-rl has the backend's cargo feature.
    pub fn is_compiled(self) -> bool {
        match self {
            Backend::Flex => cfg!(feature = "flex"),
            Backend::Tch => cfg!(feature = "tch"),
            Backend::TchCuda => cfg!(feature = "tch-cuda"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
            Backend::Vulkan => cfg!(feature = "vulkan"),
            Backend::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends this build has, in [`Backend::ALL`]'s order.
    pub fn compiled() -> Vec<Backend> {
        Backend::ALL
            .into_iter()
            .filter(|backend| backend.is_compiled())
            .collect()
    }

    /// The backend burn's `Device::default()` picks when `BURN_DEVICE` is unset: the first
    /// compiled of cuda, vulkan, wgpu, tch, flex (and tch-cuda before tch, which burn does not
    /// know: a `tch-cuda` build is one meant for the GPU).
    ///
    /// Errors if none of them is compiled in.
    pub fn build_default() -> Result<Backend> {
        Backend::ALL
            .into_iter()
            .rev()
            .find(|backend| backend.is_compiled())
            .ok_or_else(|| {
                Error::invalid(
                    "backend",
                    "none compiled in",
                    "a build with one of the features flex, tch, tch-cuda, wgpu, vulkan or cuda",
                )
            })
    }

    /// The backend named by `BURN_DEVICE` if it is set, else [`Backend::build_default`]: what
    /// a program should use when its user did not choose.
    ///
    /// Errors, rather than panicking as burn does, if `BURN_DEVICE` names a backend that is
    /// unknown to flow-rl or not compiled in.
    pub fn from_env() -> Result<Backend> {
        match std::env::var(BURN_DEVICE) {
            Ok(value) => Backend::from_env_value(Some(&value)),
            Err(std::env::VarError::NotPresent) => Backend::from_env_value(None),
            Err(std::env::VarError::NotUnicode(value)) => Err(Error::invalid(
                BURN_DEVICE,
                value.to_string_lossy(),
                "a backend name in UTF-8",
            )),
        }
    }

    /// The backend a program's user chose with a flag such as `--backend`, or
    /// [`Backend::from_env`] when they did not.
    pub fn from_flag(flag: Option<Backend>) -> Result<Backend> {
        match flag {
            Some(backend) => Ok(backend),
            None => Backend::from_env(),
        }
    }

    /// [`Backend::from_env`] for a given value of `BURN_DEVICE` (`None`: unset).
    fn from_env_value(value: Option<&str>) -> Result<Backend> {
        let Some(value) = value else {
            return Backend::build_default();
        };
        value.parse().map_err(|err| match err {
            // Name the variable, so the user knows where the bad value came from.
            Error::InvalidArgument {
                value, expected, ..
            } => Error::InvalidArgument {
                name: BURN_DEVICE.into(),
                value,
                expected,
            },
            other => other,
        })
    }

    /// The backend's default device, not yet opened: burn opens it on first use, and a GPU
    /// backend without an adapter panics then. [`Backend::open`] checks it instead.
    ///
    /// The constructors are burn's: `Device::flex()`, `Device::libtorch()`,
    /// `Device::libtorch_cuda(0)`, `Device::wgpu(DeviceKind::DefaultDevice)`,
    /// `Device::vulkan(DeviceKind::DefaultDevice)` and `Device::cuda(0)`; call them directly to
    /// pick another adapter or GPU index.
    ///
    /// Errors if the backend is not compiled in.
    pub fn device(self) -> Result<Device> {
        self.check_compiled()?;
        Ok(self.compiled_device())
    }

    /// The backend's default device, opened and checked by running a small computation on it.
    ///
    /// Errors if the backend is not compiled in, or if the device cannot run (no GPU or
    /// driver), with a hint at what to install.
    pub fn open(self) -> Result<Device> {
        let device = self.device()?;
        let probe = catch_unwind(AssertUnwindSafe(|| {
            let ones = Tensor::<1>::ones([4], &device);
            (ones.clone() + ones).sum().into_data().convert::<f32>()
        }));
        let unavailable = |message: String| Error::BackendUnavailable {
            backend: self.name().into(),
            message,
            hint: self.install_hint().into(),
        };
        match probe {
            Ok(data) => match data.as_slice::<f32>() {
                Ok([sum]) if *sum == 8.0 => Ok(device),
                other => Err(unavailable(format!(
                    "the check 1 + 1 summed over 4 values gave {other:?} instead of 8"
                ))),
            },
            // burn opens a device on its own thread, so the caller often sees only that the
            // thread went away; the cause is in that thread's panic message, printed above.
            Err(panic) => Err(unavailable(format!(
                "opening it panicked with \"{}\" (a panic message printed above by the \
                 backend's own thread may say why)",
                panic_message(panic.as_ref())
            ))),
        }
    }

    /// What to install when the backend's device does not open.
    fn install_hint(self) -> &'static str {
        match self {
            Backend::Flex => "flex runs on any CPU; this is a bug, please report it",
            Backend::Wgpu | Backend::Vulkan => {
                "install a Vulkan driver: your GPU vendor's, or Mesa's software Vulkan for \
                 a CPU (Debian/Ubuntu: `apt-get install -y mesa-vulkan-drivers`)"
            }
            Backend::Tch => {
                "the binary must find PyTorch 2.9.0's libraries: run it after \
                 `eval \"$(scripts/libtorch_env.sh)\"`, or put the `torch/lib` folder of a \
                 PyTorch 2.9.0 install on LD_LIBRARY_PATH"
            }
            Backend::TchCuda => {
                "install an NVIDIA GPU driver, and put the `torch/lib` folder of a CUDA build of \
                 PyTorch 2.9.0 on LD_LIBRARY_PATH (scripts/libtorch_env.sh installs one)"
            }
            Backend::Cuda => "install an NVIDIA GPU driver with CUDA, or choose another backend",
        }
    }

    fn check_compiled(self) -> Result<()> {
        if self.is_compiled() {
            return Ok(());
        }
        Err(Error::invalid(
            "backend",
            self.name(),
            format!(
                "a backend compiled into this build ({}); `{name}` is not compiled in: rebuild \
                 with `--features {name}`",
                names(&Backend::compiled()),
                name = self.name()
            ),
        ))
    }

    /// The device of a compiled backend.
    fn compiled_device(self) -> Device {
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => Device::flex(),
            // burn 0.22 marks its LibTorch backend deprecated in favour of CubeCL's; it is
            // kept here because CubeCL's CUDA backend cannot be built offline and LibTorch is
            // PyTorch's own CPU and GPU speed.
            #[cfg(feature = "tch")]
            #[allow(deprecated)]
            Backend::Tch => Device::libtorch(),
            #[cfg(feature = "tch-cuda")]
            #[allow(deprecated)]
            Backend::TchCuda => Device::libtorch_cuda(0),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(feature = "vulkan")]
            Backend::Vulkan => Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Device::cuda(0),
            #[allow(unreachable_patterns)]
            other => unreachable!("{} is not compiled in; checked by the caller", other.name()),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = Error;

    /// Parses a backend name, case-insensitively; errors if it is unknown or not compiled in.
    fn from_str(text: &str) -> Result<Self> {
        // burn lower-cases BURN_DEVICE too.
        let wanted = text.to_ascii_lowercase();
        let backend = Backend::ALL
            .into_iter()
            .find(|backend| backend.name() == wanted)
            .ok_or_else(|| {
                Error::invalid(
                    "backend",
                    text,
                    format!(
                        "one of {} (compiled into this build: {})",
                        names(&Backend::ALL),
                        names(&Backend::compiled())
                    ),
                )
            })?;
        backend.check_compiled()?;
        Ok(backend)
    }
}

fn names(backends: &[Backend]) -> String {
    if backends.is_empty() {
        return "none".into();
    }
    backends
        .iter()
        .map(|backend| backend.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "the backend panicked while opening the device".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_for_compiled_backends_and_missing_ones_say_how_to_rebuild() {
        for backend in Backend::ALL {
            let parsed = backend.name().to_uppercase().parse::<Backend>();
            if backend.is_compiled() {
                assert_eq!(parsed.unwrap(), backend);
            } else {
                let message = parsed.unwrap_err().to_string();
                assert!(
                    message.contains(&format!("--features {}", backend.name())),
                    "{message}"
                );
            }
        }
        let message = "metal".parse::<Backend>().unwrap_err().to_string();
        assert!(
            message.contains("one of flex, tch, tch-cuda, wgpu, vulkan, cuda"),
            "{message}"
        );
    }

    #[test]
    fn the_build_default_is_the_last_compiled_as_in_burns_order() {
        let compiled = Backend::compiled();
        assert_eq!(Backend::build_default().unwrap(), *compiled.last().unwrap());
        assert_eq!(
            Backend::from_env_value(None).unwrap(),
            *compiled.last().unwrap()
        );
    }

    #[test]
    fn burn_device_values_parse_like_flags_and_errors_name_the_variable() {
        assert_eq!(
            Backend::from_env_value(Some("FLEX")).ok(),
            "flex".parse().ok()
        );
        let message = Backend::from_env_value(Some("rocm"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("BURN_DEVICE") && message.contains("rocm"),
            "{message}"
        );
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_opens_and_is_the_flex_device() {
        assert_eq!(Backend::Flex.open().unwrap(), Device::flex());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_backend_that_is_not_compiled_has_no_device() {
        let message = Backend::Cuda.device().unwrap_err().to_string();
        assert!(
            message.contains("rebuild with `--features cuda`"),
            "{message}"
        );
    }
}
