//! Inference: the one module that knows tract.
//!
//! Why it is shaped this way: loading, typing and optimizing an ONNX graph takes hundreds of milliseconds
//! and allocates freely, so it happens once, at start-up, with the model's input shape fixed. Per frame we
//! only write pixels into the input tensor and run the prepared plan. The input tensor is kept between
//! frames and handed to tract as a shared value; tract lets go of it when a run ends, so the next frame's
//! preprocessing writes into the same memory. tract still allocates its intermediate and output tensors in
//! each run (measured in `tests/steady_state.rs`), which is the one place the steady state allocates; in
//! the `lookout` binary the large ones come from the engine's planned region (`crate::metrics::runplan`:
//! the same memory every frame, laid out once).
//! Every output must be f32 (quantized models must end in DequantizeLinear, as QDQ exports do).
//!
//! Several engines ([`Engine::fork`]) share one optimized plan, so its weights are in memory once; each
//! has its own run state (tract's intermediate tensors), which is what an engine costs. An [`Input`] is
//! a tensor of the model's input shape that preprocessing can fill on one thread while an engine runs
//! another on its own thread.
//!
//! [`kernels`] holds the two ops lookout runs itself instead of tract's (depthwise convolution and max
//! pooling), swapped in between tract's simplification and its optimization.

use std::sync::Arc;

pub mod kernels;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::SimpleState;

/// Why a run failed. Loading errors are plain `anyhow` errors: they stop start-up.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("inference failed: {0}")]
    Run(String),
}

/// A model input tensor, filled by preprocessing and lent to [`Engine::run_input`].
pub struct Input(Arc<Tensor>);

impl Input {
    /// The tensor's memory. tract lets go of its reference when a run ends, so this does not copy.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        let t = Arc::make_mut(&mut self.0);
        debug_assert_eq!(t.datum_type(), f32::datum_type());
        // SAFETY: an `Input` is only made as f32 (`Engine::new_input`) and never replaced by another type.
        unsafe { t.as_slice_mut_unchecked::<f32>() }
    }
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Input").field(&self.0.shape()).finish()
    }
}

/// A loaded, optimized model with its input tensor and the outputs of the last run.
pub struct Engine {
    state: TypedSimpleState,
    /// This engine's planned memory for tract's run (`crate::metrics::runplan`), if a slot was free.
    plan_slot: Option<usize>,
    /// The engine's own input tensor: `None` once let go of ([`Engine::drop_input`]); made again, zeros,
    /// if the engine is asked for it after that.
    input: Option<Arc<Tensor>>,
    shape: TVec<usize>,
    outputs: TVec<TValue>,
    output_lens: Vec<usize>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The outputs may be blocks of the engine's region: let go of them first, so it can be unmapped.
        self.outputs.clear();
        if let Some(i) = self.plan_slot {
            let (plans, bytes) = crate::metrics::runplan::plans(i);
            log::debug!("engine's run memory: {plans} plan(s) made, the last {} KiB", bytes / 1024);
            crate::metrics::runplan::release_slot(i);
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("input", &self.shape).field("output_lens", &self.output_lens).finish()
    }
}

/// Whose kernels run a model's depthwise convolutions, few-channel dense convolutions and max pools (`[inference] kernels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    /// lookout's where they were measured faster than tract's: x86-64 (`lookout bench --ops`, the
    /// README's figures). On ARM tract has NEON depthwise kernels of its own and lookout's have not been
    /// timed on a board, so tract's run there.
    #[default]
    Auto,
    /// lookout's ([`kernels`]), on every architecture.
    Lookout,
    /// tract's own, everywhere.
    Tract,
}

impl Kernels {
    /// Whether lookout's kernels run on this build.
    pub fn lookouts(self) -> bool {
        match self {
            Kernels::Auto => cfg!(target_arch = "x86_64"),
            Kernels::Lookout => true,
            Kernels::Tract => false,
        }
    }
}

/// A zero f32 tensor of `shape` (a scalar should the allocation fail: a run then reports a shape error).
fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zero::<f32>(shape).unwrap_or_default()
}

/// tract's version, for `--version` and logs.
pub const TRACT_VERSION: &str = "0.23.9";

impl Engine {
    /// Loads an ONNX model from memory, fixes its input to `shape` (NCHW, f32), optimizes it (with lookout's
    /// kernels where `kernels` says) and checks that it has `n_outputs` f32 outputs.
    pub fn load(onnx: &[u8], shape: [usize; 4], n_outputs: usize, kernels: Kernels) -> anyhow::Result<Engine> {
        use anyhow::Context;
        let t0 = std::time::Instant::now();
        let model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(onnx))
            .context("tract could not read the ONNX model")?
            .with_input_fact(0, f32::fact(shape).into())
            .context("setting the input shape")?;
        let t1 = std::time::Instant::now();
        let model = model.into_typed().context("tract could not type the model")?;
        let t2 = std::time::Instant::now();
        let mut model = model.into_decluttered().context("tract could not simplify the model")?;
        let t3 = std::time::Instant::now();
        if kernels.lookouts() {
            let replaced = kernels::substitute(&mut model).context("substituting lookout's kernels")?;
            log::debug!("{replaced} nodes run on lookout's kernels");
        }
        let t4 = std::time::Instant::now();
        model.optimize().context("tract could not optimize the model")?;
        let t5 = std::time::Instant::now();
        log::debug!(
            "tract: read {:?}, typed {:?}, decluttered {:?}, lookout's kernels {:?}, optimized {:?}",
            t1 - t0,
            t2 - t1,
            t3 - t2,
            t4 - t3,
            t5 - t4
        );
        anyhow::ensure!(
            model.outputs.len() == n_outputs,
            "the model has {} outputs, the manifest lists {n_outputs}",
            model.outputs.len()
        );
        let mut output_lens = Vec::with_capacity(n_outputs);
        for (i, o) in model.outputs.iter().enumerate() {
            let fact = model.outlet_fact(*o)?;
            anyhow::ensure!(fact.datum_type == f32::datum_type(), "output {i} is {:?}, not f32", fact.datum_type);
            let len = fact
                .shape
                .as_concrete()
                .map(|s| s.iter().product())
                .with_context(|| format!("output {i} has no fixed shape"))?;
            output_lens.push(len);
        }
        let plan = model.into_runnable().context("tract could not plan the model")?;
        let state = SimpleState::new(&plan).context("tract could not make a run state")?;
        let input = Some(Arc::new(Tensor::zero::<f32>(&shape)?));
        let plan_slot = crate::metrics::runplan::take_slot();
        Ok(Engine { state, plan_slot, input, shape: shape.into(), outputs: tvec!(), output_lens })
    }

    /// The input tensor's memory, to be filled by preprocessing.
    pub fn input_mut(&mut self) -> &mut [f32] {
        // tract drops its reference to the input at the end of each run, so this is exclusive and does not
        // copy; `make_mut` would only clone if a run were still holding it.
        let t = Arc::make_mut(self.own_input());
        if t.datum_type() != f32::datum_type() {
            return &mut [];
        }
        // SAFETY: checked f32 just above.
        unsafe { t.as_slice_mut_unchecked::<f32>() }
    }

    /// Runs the model on the current input; outputs are then available from [`Engine::output`].
    pub fn run(&mut self) -> Result<(), InferError> {
        let input = self.own_input().clone();
        self.run_tensor(input)
    }

    /// Runs the model on `input` (filled elsewhere); outputs as for [`Engine::run`].
    pub fn run_input(&mut self, input: &Input) -> Result<(), InferError> {
        self.run_tensor(input.0.clone())
    }

    fn run_tensor(&mut self, input: Arc<Tensor>) -> Result<(), InferError> {
        self.outputs.clear();
        let state = &mut self.state;
        let out = crate::metrics::alloc::in_run(self.plan_slot, || state.run(tvec!(TValue::from_const(input))))
            .map_err(|e| InferError::Run(format!("{e:#}")))?;
        self.outputs = out;
        Ok(())
    }

    /// The engine's own input tensor, made again (zeros) if it was let go of.
    fn own_input(&mut self) -> &mut Arc<Tensor> {
        let shape = &self.shape;
        self.input.get_or_insert_with(|| Arc::new(zeros(shape)))
    }

    /// Lets go of this engine's own input tensor: once the engines' first runs are made, the pipeline's
    /// engines run on the jobs' [`Input`]s, and the tensor the self-test and those first runs used (one
    /// model input, 1.5 MB for FastestDet at 352x352) would stay resident unused. [`Engine::input_mut`]
    /// and [`Engine::run`] make a new one (zeros) if they are called after this.
    pub fn drop_input(&mut self) {
        self.input = None;
    }

    /// A new input tensor of this model's shape (zeros).
    pub fn new_input(&self) -> anyhow::Result<Input> {
        Ok(Input(Arc::new(Tensor::zero::<f32>(&self.shape)?)))
    }

    /// Another engine on the same optimized plan: the weights are shared, the run state is its own.
    pub fn fork(&self) -> anyhow::Result<Engine> {
        let state = SimpleState::new(self.state.plan())?;
        // The parent's input, shared: a fork runs on `Input`s (`run_input`); `input_mut` would copy it.
        let plan_slot = crate::metrics::runplan::take_slot();
        Ok(Engine {
            state,
            plan_slot,
            input: self.input.clone(),
            shape: self.shape.clone(),
            outputs: tvec!(),
            output_lens: self.output_lens.clone(),
        })
    }

    /// Times every node of the plan over `runs` runs of the current input: (op name, total time, nodes),
    /// largest first. For `lookout bench --ops`: where the model's time goes in tract.
    pub fn profile(&mut self, runs: usize) -> anyhow::Result<Vec<(String, std::time::Duration, usize)>> {
        use std::collections::HashMap;
        use std::time::{Duration, Instant};
        let mut per_node: HashMap<usize, (String, Duration)> = HashMap::new();
        for _ in 0..runs {
            let input = tvec!(TValue::from_const(self.own_input().clone()));
            self.state.run_plan_with_eval(input, |session, op_state, node, inputs| {
                let t = Instant::now();
                let r = tract_onnx::tract_core::plan::eval(session, op_state, node, inputs);
                let e = per_node.entry(node.id).or_insert_with(|| (node.op().name().to_string(), Duration::ZERO));
                e.1 += t.elapsed();
                r
            })?;
        }
        let mut per_op: HashMap<String, (Duration, usize)> = HashMap::new();
        for (name, d) in per_node.into_values() {
            let e = per_op.entry(name).or_default();
            e.0 += d;
            e.1 += 1;
        }
        let mut v: Vec<_> = per_op.into_iter().map(|(k, (d, n))| (k, d, n)).collect();
        v.sort_by_key(|o| std::cmp::Reverse(o.1));
        Ok(v)
    }

    pub fn output_count(&self) -> usize {
        self.output_lens.len()
    }

    /// Element count of output `i` (known from load).
    pub fn output_len(&self, i: usize) -> usize {
        self.output_lens.get(i).copied().unwrap_or(0)
    }

    /// Output `i` of the last run as a flat f32 slice (empty before the first run).
    pub fn output(&self, i: usize) -> &[f32] {
        self.outputs.get(i).and_then(|t| t.as_plain_ram()).and_then(|v| v.as_slice::<f32>().ok()).unwrap_or(&[])
    }
}
