//! The fast paths (`[perf]` in the config). Whether each pays off on a
//! machine is measured by `ard-pipeline bench` (docs/src/performance.md).
//!
//! On by default, because they give the same weights bit for bit:
//!
//! - `clean_forward_no_grad`: ARD at alpha = 1 computes the student's clean
//!   forward only for BatchNorm's running statistics; without a graph it
//!   costs no backward pass and keeps no activations
//!   ([`crate::train::StudentUpdate`]). Device-independent;
//! - `malloc_reuse`: glibc malloc with one arena and no returning of freed
//!   memory ([`reuse_freed_memory`]). libtorch allocates activations and
//!   gradients afresh every step; by default glibc serves blocks over 32 MB
//!   with fresh mappings and keeps an arena per thread, so each step
//!   page-faults its working set in again (kernel time), and every stage
//!   thread holds its own high-water mark (resident memory).
//!
//! On by default where they apply (a CPU; bf16 where it is native), though
//! they round differently (accuracy within a point of f32 over three seeds);
//! set them to pin f32 / NCHW:
//!
//! - `channels_last` (CPU): channels-last (NHWC) convolution weights and
//!   inputs ([`Model::use_channels_last`]) for the student, the attack's
//!   replica and the online teacher;
//! - `attack_dtype` (CPU with AVX512-BF16): the training attack runs on a
//!   bf16 copy of the student ([`Model::use_compute_kind`]: convolutions and
//!   the linear layer in bf16, BatchNorm and its running statistics in f32,
//!   casts at the model's edges); it needs only the input gradient's sign;
//! - `student_dtype` (CPU with AVX512-BF16): the student's forwards and
//!   backward pass on a bf16 copy ([`ComputeCopy`]), the f32 weights stepped
//!   with the gradients cast to f32 (f32 master weights and SGD: what
//!   `torch.autocast` gives PyTorch); 0.8 points natural and 1.0 PGD-20 below
//!   f32 over three quickstart seeds, at the rule's edge.
//!
//! Opt-in:
//!
//! - `teacher_dtype = "bf16"` / `"auto"`: the online teacher's forward in
//!   bf16 (a soft-label cache always holds the plain f32 teacher's logits);
//!   with the bf16 student it cost 1.8 points natural and 1.5 PGD-20 over
//!   three quickstart seeds;
//! - `amp` (CUDA): fp16 autocast for the attack and the student, with
//!   dynamic loss scaling ([`crate::distill::GradScaler`]).
//!
//! The pipeline's attack replica is itself the bf16 copy (weights rounded on
//! the way in, f32 BatchNorm statistics sent back); the sequential trainer
//! attacks a [`ComputeCopy`]: both engines compute the same thing.

use crate::config::{ComputeDtype, PerfConfig};
use crate::error::{Error, Result};
use crate::models::Model;
use tch::{Device, Kind, Tensor};

/// Whether this CPU computes bf16 natively (x86-64: AVX512-BF16). Without it
/// libtorch still runs bf16, converting in software, which is slower than f32.
pub fn cpu_has_native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The process-wide settings of a command that computes from `cfg` (training,
/// evaluation, export, soft-label filling), before its threads start: glibc
/// malloc reuse (`perf.malloc_reuse`; an attack allocates per step as
/// training does) and libtorch's threads (`run.threads`).
pub fn configure_process(cfg: &crate::config::Config) {
    if cfg.perf.malloc_reuse && !reuse_freed_memory() {
        log::warn!("perf.malloc_reuse: not glibc malloc here (or refused); left as it is");
    }
    crate::device::set_threads(cfg.run.threads);
}

/// glibc malloc, process-wide: one arena for every thread, no block served
/// by its own mapping, and free memory at the top of the heap kept (up to
/// 2 GiB), so freed buffers are reused instead of faulted in again. Takes
/// effect for arenas not yet created (call it before starting threads).
/// Returns false where it does not apply (not glibc) or glibc refused.
pub fn reuse_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::raw::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // From glibc's malloc.h.
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_MAX: c_int = -4;
        const M_ARENA_MAX: c_int = -8;
        // SAFETY: mallopt only changes allocator parameters; these values are valid.
        unsafe {
            mallopt(M_ARENA_MAX, 1) == 1
                && mallopt(M_MMAP_MAX, 0) == 1
                && mallopt(M_TRIM_THRESHOLD, c_int::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The compute type `dtype` asks for on `device` (None: f32); `auto` is bf16
/// on a CPU that computes it natively, and says so in the log.
fn resolve(dtype: ComputeDtype, key: &str, device: Device) -> Option<Kind> {
    match dtype {
        ComputeDtype::F32 => None,
        ComputeDtype::Bf16 => Some(Kind::BFloat16),
        ComputeDtype::Auto => {
            let native = device == Device::Cpu && cpu_has_native_bf16();
            log::info!(
                "{key} = \"auto\": {}",
                if native {
                    "bf16 (this CPU computes bf16 natively)"
                } else {
                    "f32 (no native bf16 on this device)"
                }
            );
            native.then_some(Kind::BFloat16)
        }
    }
}

/// The fast paths of a run, checked against its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perf {
    pub channels_last: bool,
    /// The attack's compute type when it is not f32.
    pub attack_kind: Option<Kind>,
    /// The compute type of the student's forward and backward passes when it
    /// is not f32 (its weights and SGD step stay f32).
    pub student_kind: Option<Kind>,
    /// The online teacher's compute type when it is not f32.
    pub teacher_kind: Option<Kind>,
    /// fp16 autocast and loss scaling (CUDA).
    pub amp: bool,
}

impl PerfConfig {
    /// Checks the memory-format and bf16 paths against the device: they are
    /// CPU paths (measured and tested there only), and bf16 needs native
    /// support. (`clean_forward_no_grad` is read by the student's update.)
    pub fn build(&self, device: Device) -> Result<Perf> {
        let perf = Perf {
            channels_last: self.channels_last.unwrap_or(device == Device::Cpu),
            attack_kind: resolve(self.attack_dtype, "perf.attack_dtype", device),
            student_kind: resolve(self.student_dtype, "perf.student_dtype", device),
            teacher_kind: resolve(self.teacher_dtype, "perf.teacher_dtype", device),
            amp: self.amp,
        };
        if perf.amp && !device.is_cuda() {
            return Err(Error::Setting(format!(
                "perf.amp = true: fp16 autocast is a CUDA path and the run's device is {}; \
                 on a CPU use perf.attack_dtype = \"bf16\" (or run on a GPU)",
                crate::device::device_name(device)
            )));
        }
        let low = [perf.attack_kind, perf.student_kind, perf.teacher_kind]
            .iter()
            .any(Option::is_some);
        if !perf.channels_last && !low {
            return Ok(perf);
        }
        if device != Device::Cpu {
            return Err(Error::Setting(format!(
                "[perf] channels_last and the bf16 dtypes are CPU fast paths \
                 (tested on CPU only); the run's device is {}: turn them off there",
                crate::device::device_name(device)
            )));
        }
        if low && !cpu_has_native_bf16() {
            let key = match (perf.attack_kind, perf.student_kind) {
                (Some(_), _) => "perf.attack_dtype",
                (None, Some(_)) => "perf.student_dtype",
                (None, None) => "perf.teacher_dtype",
            };
            return Err(Error::Setting(format!(
                "{key} = \"bf16\": this CPU has no native bf16 (AVX512-BF16), \
                 where bf16 is slower than f32; use \"f32\" or \"auto\""
            )));
        }
        Ok(perf)
    }
}

impl Perf {
    /// Applies the memory-format path to a model that runs in f32 (student,
    /// teacher, evaluation copy). A no-op when off.
    pub fn prepare(&self, model: &mut Model) {
        if self.channels_last {
            model.use_channels_last();
        }
    }

    /// Makes `model` a model that only evaluates and attacks (`eval`):
    /// [`Perf::prepare`], then BatchNorm folded into the convolutions
    /// ([`Model::fold_batch_norm`]: the same function to float rounding).
    pub fn prepare_for_evaluation(&self, model: &mut Model) {
        self.prepare(model);
        model.fold_batch_norm();
    }

    /// [`Perf::prepare`], then converted to `kind` when not f32.
    fn prepare_in(&self, model: &mut Model, kind: Option<Kind>) {
        self.prepare(model);
        if let Some(kind) = kind {
            model.use_compute_kind(kind);
        }
    }

    /// Makes `teacher` the online teacher (the teacher's compute type).
    pub fn prepare_online_teacher(&self, teacher: &mut Model) {
        self.prepare_in(teacher, self.teacher_kind);
    }

    /// Makes `replica` the model the training attack runs on (the attack's compute type).
    pub fn prepare_attack_replica(&self, replica: &mut Model) {
        self.prepare_in(replica, self.attack_kind);
    }

    /// The sequential trainer's reduced-precision copy of `student` for the
    /// attack, when the attack is not f32.
    pub fn attack_shadow(&self, student: &Model) -> Result<Option<ComputeCopy>> {
        self.attack_kind
            .map(|kind| ComputeCopy::new(self, student, kind))
            .transpose()
    }

    /// The reduced-precision copy of `student` its update computes on, when
    /// the student's passes are not f32.
    pub fn student_copy(&self, student: &Model) -> Result<Option<ComputeCopy>> {
        self.student_kind
            .map(|kind| ComputeCopy::new(self, student, kind))
            .transpose()
    }
}

/// A copy of the student that computes in a reduced type (bf16) while the
/// student keeps f32 weights: refreshed from the student before use; the
/// BatchNorm running statistics its train-mode forwards produce (kept in f32)
/// are copied back after it, and so are its gradients, cast to f32, for the
/// student's f32 SGD step.
#[derive(Debug)]
pub struct ComputeCopy {
    model: Model,
    running: Vec<String>,
}

impl ComputeCopy {
    fn new(perf: &Perf, student: &Model, kind: Kind) -> Result<ComputeCopy> {
        let mut model = Model::new(student.arch, student.device());
        model.copy_weights_from(student)?;
        perf.prepare_in(&mut model, Some(kind));
        let running: Vec<String> = model
            .vs
            .variables()
            .into_keys()
            .filter(|n| n.ends_with(".running_mean") || n.ends_with(".running_var"))
            .collect();
        Ok(ComputeCopy { model, running })
    }

    /// Loads the student's current weights (rounded to the copy's type) and
    /// returns the model to compute on.
    pub fn refresh(&mut self, student: &Model) -> Result<&Model> {
        self.model.vs.copy(&student.vs)?;
        Ok(&self.model)
    }

    /// Copies the running statistics the copy's forwards left in it to `student`.
    pub fn statistics_to(&self, student: &Model) -> Result<()> {
        let from = self.model.vs.variables();
        let to = student.vs.variables();
        tch::no_grad(|| -> Result<()> {
            for name in &self.running {
                let (Some(src), Some(dst)) = (from.get(name), to.get(name)) else {
                    return Err(Error::invalid(
                        "compute copy",
                        format!("no variable {name}"),
                    ));
                };
                dst.shallow_clone().f_copy_(src)?;
            }
            Ok(())
        })
    }

    /// The gradients of the copy's variables `names` (in that order) as f32
    /// tensors (undefined where a variable has none), and the copy's own
    /// cleared for the next backward pass.
    pub fn take_gradients(&self, names: &[String]) -> Result<Vec<Tensor>> {
        let vars = self.model.vs.variables();
        tch::no_grad(|| {
            names
                .iter()
                .map(|name| {
                    let var = vars.get(name).ok_or_else(|| {
                        Error::invalid("compute copy", format!("no variable {name}"))
                    })?;
                    let mut g = var.grad();
                    if !g.defined() {
                        return Ok(g);
                    }
                    // A copy even where the gradient is f32 already (BatchNorm):
                    // the copy's own is zeroed next.
                    let f32_grad = if g.kind() == Kind::Float {
                        g.copy()
                    } else {
                        g.f_to_kind(Kind::Float)?
                    };
                    let _ = g.f_zero_()?;
                    Ok(f32_grad)
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tests run in parallel and libtorch's seed is global: models are copied
    // from one another rather than re-seeded, and each test draws its input once.
    fn model() -> Model {
        Model::new("mobilenet_v2_x0.5".parse().unwrap(), Device::Cpu)
    }

    fn copy_of(m: &Model) -> Model {
        let mut c = model();
        c.copy_weights_from(m).unwrap();
        c
    }

    fn input() -> Tensor {
        Tensor::rand([16, 3, 32, 32], (Kind::Float, Device::Cpu))
    }

    fn max_abs(t: &Tensor) -> f64 {
        t.abs().max().double_value(&[])
    }

    #[test]
    fn channels_last_computes_the_same_logits() {
        let plain = model();
        let mut fast = copy_of(&plain);
        fast.use_channels_last();
        let w = fast.vs.variables()["conv1.weight"].shallow_clone();
        assert!(!w.is_contiguous(), "conv weights are channels-last");
        let x = input();
        let a = plain.forward_t(&x, false);
        let diff = max_abs(&(&a - fast.forward_t(&x, false)));
        assert!(diff < 1e-4, "max |difference| {diff}");
        // Saving still writes contiguous NCHW tensors.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        fast.save(&path).unwrap();
        let back = Model::load(fast.arch, Device::Cpu, &path).unwrap();
        let diff = max_abs(&(&back.forward_t(&x, false) - &a));
        assert!(diff < 1e-4, "reloaded: max |difference| {diff}");
    }

    #[test]
    fn bf16_replica_keeps_batch_norm_f32_and_tracks_f32_logits() {
        let plain = model();
        let mut low = copy_of(&plain);
        low.use_compute_kind(Kind::BFloat16);
        let vars = low.vs.variables();
        assert_eq!(vars["conv1.weight"].kind(), Kind::BFloat16);
        assert_eq!(vars["linear.bias"].kind(), Kind::BFloat16);
        assert_eq!(vars["bn1.weight"].kind(), Kind::Float);
        assert_eq!(vars["bn1.running_var"].kind(), Kind::Float);
        let x = input();
        // Eval mode: bf16 rounding only (measured about 0.5% of the logits' scale).
        let (a, b) = (plain.forward_t(&x, false), low.forward_t(&x, false));
        assert_eq!(b.kind(), Kind::Float);
        let diff = max_abs(&(&a - &b));
        assert!(diff < 0.05 * max_abs(&a), "max |difference| {diff}");
        // Train-mode forwards move the f32 running statistics of both alike
        // (at random init batch statistics amplify rounding, hence the loose bound).
        let _ = (plain.forward_t(&x, true), low.forward_t(&x, true));
        let (ra, rb) = (
            plain.vs.variables()["bn1.running_mean"].shallow_clone(),
            vars["bn1.running_mean"].shallow_clone(),
        );
        let diff = max_abs(&(&ra - &rb));
        assert!(diff < 0.05 * max_abs(&ra), "running mean differs by {diff}");
        // Input gradients flow back through the casts, in f32.
        let x = x.set_requires_grad(true);
        let g = Tensor::run_backward(
            &[low.forward_t(&x, true).sum(Kind::Float)],
            &[&x],
            false,
            false,
        );
        assert_eq!(g[0].kind(), Kind::Float);
        assert!(max_abs(&g[0]) > 0.0);
    }

    #[test]
    fn attack_shadow_refreshes_and_returns_statistics() {
        let student = model();
        let perf = Perf {
            attack_kind: Some(Kind::BFloat16),
            ..Default::default()
        };
        let mut shadow = perf.attack_shadow(&student).unwrap().unwrap();
        let attacked = shadow.refresh(&student).unwrap();
        let _ = attacked.forward_t(&input(), true);
        let before = student.vs.variables()["bn1.running_mean"].copy();
        shadow.statistics_to(&student).unwrap();
        let after = student.vs.variables()["bn1.running_mean"].copy();
        assert!((&after - &before).abs().max().double_value(&[]) > 0.0);
        assert_eq!(student.vs.variables()["conv1.weight"].kind(), Kind::Float);
    }

    #[test]
    fn student_copy_gives_f32_gradients_close_to_the_f32_ones() {
        // A trained student: at random init, train-mode BatchNorm makes the
        // gradients the small difference of large terms, which rounding swamps.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("weights/quickstart-mobilenet_v2_x0.5.safetensors");
        let student =
            Model::load("mobilenet_v2_x0.5".parse().unwrap(), Device::Cpu, &path).unwrap();
        let perf = Perf {
            student_kind: Some(Kind::BFloat16),
            ..Default::default()
        };
        let mut copy = perf.student_copy(&student).unwrap().unwrap();
        let x = input();
        let y = Tensor::randint(10, [16], (Kind::Int64, Device::Cpu));
        let loss = |m: &Model| m.forward_t(&x, true).cross_entropy_for_logits(&y);
        let vars = student.vs.variables();
        let names: Vec<String> = vars
            .iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, _)| n.clone())
            .collect();
        loss(copy.refresh(&student).unwrap()).backward();
        let low = copy.take_gradients(&names).unwrap();
        loss(&student).backward();
        // Over all parameters together (a bias whose every consumer is a
        // train-mode BatchNorm has a gradient of zero up to rounding).
        assert!(low.iter().all(|g| g.kind() == Kind::Float));
        let flat = |gs: Vec<Tensor>| {
            Tensor::cat(&gs.iter().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(), 0)
        };
        let low = flat(low);
        let exact = flat(names.iter().map(|n| vars[n].grad()).collect());
        let cos = (&low * &exact).sum(Kind::Double).double_value(&[])
            / (low.norm().double_value(&[]) * exact.norm().double_value(&[]));
        assert!(cos > 0.98, "cosine {cos} (measured about 0.995)");
        // The copy's own gradients are cleared: the next backward starts at zero.
        let again = copy.take_gradients(&names).unwrap();
        assert!(again.iter().all(|g| max_abs(g) == 0.0));
        assert_eq!(vars["conv1.weight"].kind(), Kind::Float);
        assert!(copy.take_gradients(&["nope".into()]).is_err());
    }

    #[test]
    fn fast_paths_are_cpu_only() {
        let cfg = PerfConfig {
            channels_last: Some(true),
            ..Default::default()
        };
        assert!(cfg.build(Device::Cpu).is_ok());
        assert!(cfg.build(Device::Cuda(0)).is_err());
        assert_eq!(
            PerfConfig::default().build(Device::Cuda(0)).unwrap(),
            Perf::default()
        );
    }

    #[test]
    fn amp_is_a_cuda_path() {
        let cfg = PerfConfig {
            amp: true,
            ..Default::default()
        };
        let e = cfg.build(Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("perf.amp") && e.contains("bf16"), "{e}");
        assert!(cfg.build(Device::Cuda(0)).unwrap().amp);
    }

    #[test]
    fn the_defaults_are_the_fast_paths_that_keep_accuracy() {
        // On a CPU: channels-last, and the attack and the student's update in
        // bf16 where the CPU computes it natively; the teacher stays f32 (opt-in).
        let cpu = PerfConfig::default().build(Device::Cpu).unwrap();
        let bf16 = cpu_has_native_bf16().then_some(Kind::BFloat16);
        assert!(cpu.channels_last);
        assert_eq!(
            (cpu.attack_kind, cpu.student_kind, cpu.teacher_kind),
            (bf16, bf16, None)
        );
        let auto = PerfConfig {
            student_dtype: ComputeDtype::Auto,
            teacher_dtype: ComputeDtype::Auto,
            ..Default::default()
        };
        let cpu = auto.build(Device::Cpu).unwrap();
        assert_eq!((cpu.student_kind, cpu.teacher_kind), (bf16, bf16));
        // A GPU gets f32 and NCHW, and no error (explicit bf16 or
        // channels_last = true would be refused there).
        assert_eq!(
            PerfConfig::default().build(Device::Cuda(0)).unwrap(),
            Perf::default()
        );
        // Pinned: f32 everywhere.
        let pinned = PerfConfig {
            channels_last: Some(false),
            attack_dtype: ComputeDtype::F32,
            student_dtype: ComputeDtype::F32,
            teacher_dtype: ComputeDtype::F32,
            ..Default::default()
        };
        assert_eq!(pinned.build(Device::Cpu).unwrap(), Perf::default());
    }
}
