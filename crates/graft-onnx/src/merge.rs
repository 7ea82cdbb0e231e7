//! Several recordings of one graph, made at different batch and sequence sizes, merged into one
//! ONNX graph whose shapes follow the sizes of its inputs.
//!
//! Every integer a step takes (a target shape, a slice bound) is fitted, across the recordings,
//! as `c · batch^i · sequence^j + d`, and computed in the graph from the inputs' shapes where it
//! is not a constant. A constant whose values change with the size (position ids, a relative
//! position table) is kept at the largest recorded size and sliced to the running one, after
//! checking that each smaller recording is exactly that slice. Anything else that differs
//! between recordings is an error: the graph would be right only at the sizes it was recorded at.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::OnnxError;
use crate::proto::{AttributeProto, GraphProto, NodeProto, TensorProto, attribute_type, data_type};
use crate::translate::{Arg, Attr, Step, ValueData, Values};

/// `c · Π sizes[k]^powers[k] + d`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Sym {
    c: i64,
    powers: Vec<u32>,
    d: i64,
}

impl Sym {
    fn constant(&self) -> Option<i64> {
        self.powers
            .iter()
            .all(|p| *p == 0)
            .then_some(self.c + self.d)
    }

    fn at(&self, sizes: &[i64]) -> i64 {
        let m: i64 = self
            .powers
            .iter()
            .zip(sizes)
            .map(|(p, s)| s.pow(*p))
            .product();
        self.c * m + self.d
    }
}

/// The simplest `Sym` that gives `values[t]` at `sizes[t]` for every recording `t`.
fn fit(values: &[i64], sizes: &[Vec<i64>]) -> Option<Sym> {
    let n = sizes[0].len();
    if values.iter().all(|v| *v == values[0]) {
        return Some(Sym {
            c: values[0],
            powers: vec![0; n],
            d: 0,
        });
    }
    let mut candidates: Vec<Vec<u32>> = vec![Vec::new()];
    for _ in 0..n {
        candidates = candidates
            .into_iter()
            .flat_map(|c| {
                (0..=2).map(move |p| {
                    let mut c = c.clone();
                    c.push(p);
                    c
                })
            })
            .collect();
    }
    candidates.sort_by_key(|c| (c.iter().sum::<u32>(), c.clone()));
    for powers in candidates.into_iter().filter(|c| c.iter().any(|p| *p > 0)) {
        let monomial = |t: usize| -> i64 {
            powers
                .iter()
                .zip(&sizes[t])
                .map(|(p, s)| s.pow(*p))
                .product()
        };
        let m0 = monomial(0);
        let Some(t1) = (1..values.len()).find(|t| monomial(*t) != m0) else {
            continue;
        };
        let (dx, dm) = (values[t1] - values[0], monomial(t1) - m0);
        if dx % dm != 0 {
            continue;
        }
        let c = dx / dm;
        let sym = Sym {
            c,
            powers: powers.clone(),
            d: values[0] - c * m0,
        };
        if (0..values.len()).all(|t| sym.at(&sizes[t]) == values[t]) {
            return Some(sym);
        }
    }
    None
}

/// Where the graph reads each variable size: an input and its axis.
pub struct Sources {
    pub variables: Vec<(String, usize)>,
}

/// The merged graph's nodes and initializers.
pub struct Merged {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
}

pub fn merge(recordings: &[(Vec<Step>, Vec<i64>)], sources: &Sources) -> Result<Merged, OnnxError> {
    let (base, _) = &recordings[0];
    let sizes: Vec<Vec<i64>> = recordings.iter().map(|(_, s)| s.clone()).collect();
    for (steps, at) in &recordings[1..] {
        if let Some(i) = (0..base.len().max(steps.len())).find(|i| {
            base.get(*i).map(|s| (s.op, &s.outputs)) != steps.get(*i).map(|s| (s.op, &s.outputs))
        }) {
            let origin = |steps: &[Step]| {
                steps
                    .get(i)
                    .map_or("the end of the graph".to_string(), |s| s.origin.clone())
            };
            return Err(OnnxError::Unsupported(format!(
                "the graph changes with the input size: recorded at sizes {:?} it has {} where at \
                 {at:?} it has {}",
                sizes[0],
                origin(base),
                origin(steps),
            )));
        }
    }
    let mut out = Emitter {
        sources,
        nodes: Vec::new(),
        initializers: Vec::new(),
        syms: HashMap::new(),
        next: 0,
    };
    for (i, step) in base.iter().enumerate() {
        let resolved: Vec<Step> = recordings[1..]
            .iter()
            .map(|(steps, _)| {
                let mut own = steps[i].clone();
                for (arg, first) in own.inputs.iter_mut().zip(&step.inputs) {
                    if *arg == Arg::SameAsFirst {
                        *arg = first.clone();
                    }
                }
                own
            })
            .collect();
        let all: Vec<&Step> = std::iter::once(step).chain(resolved.iter()).collect();
        let differs = |what: &str| {
            OnnxError::Unsupported(format!(
                "{} of {} changes with the input size",
                what, step.origin
            ))
        };
        if all.iter().any(|s| s.attrs != step.attrs) {
            return Err(differs("an attribute"));
        }
        if all.iter().any(|s| s.inputs.len() != step.inputs.len()) {
            return Err(differs("the inputs"));
        }
        if step.op.is_empty() {
            let values: Vec<&Values> = all
                .iter()
                .map(|s| match &s.inputs[0] {
                    Arg::Data(v) => v,
                    _ => unreachable!("an initializer step holds its value"),
                })
                .collect();
            out.constant(&step.outputs[0], &values, &sizes, &step.origin)?;
            continue;
        }
        let mut inputs = Vec::with_capacity(step.inputs.len());
        for (j, arg) in step.inputs.iter().enumerate() {
            let name = match arg {
                Arg::Name(name) => {
                    if all.iter().any(|s| s.inputs[j] != *arg) {
                        return Err(differs("an input"));
                    }
                    name.clone()
                }
                Arg::Ints(_) => {
                    let vectors: Vec<&Vec<i64>> = all
                        .iter()
                        .map(|s| match &s.inputs[j] {
                            Arg::Ints(v) => Ok(v),
                            _ => Err(differs("an input")),
                        })
                        .collect::<Result<_, _>>()?;
                    if vectors.iter().any(|v| v.len() != vectors[0].len()) {
                        return Err(differs("the rank of a shape"));
                    }
                    let syms = (0..vectors[0].len())
                        .map(|k| {
                            let values: Vec<i64> = vectors.iter().map(|v| v[k]).collect();
                            fit(&values, &sizes).ok_or_else(|| {
                                differs(&format!("a size ({values:?} at sizes {sizes:?})"))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    out.ints(&syms)
                }
                Arg::SameAsFirst => unreachable!("the first recording holds its constants"),
                Arg::Data(_) => {
                    let values: Vec<&Values> = all
                        .iter()
                        .map(|s| match &s.inputs[j] {
                            Arg::Data(v) => Ok(v),
                            _ => Err(differs("an input")),
                        })
                        .collect::<Result<_, _>>()?;
                    let name = out.fresh("c");
                    out.constant(&name, &values, &sizes, &step.origin)?;
                    name
                }
            };
            inputs.push(name);
        }
        out.nodes
            .push(node(step.op, inputs, step.outputs.clone(), &step.attrs));
    }
    Ok(Merged {
        nodes: out.nodes,
        initializers: out.initializers,
    })
}

struct Emitter<'a> {
    sources: &'a Sources,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    syms: HashMap<Sym, String>,
    next: usize,
}

impl Emitter<'_> {
    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    fn initializer(&mut self, name: &str, values: &Values) {
        self.initializers.push(tensor(name, values));
    }

    fn int_constant(&mut self, values: Vec<i64>) -> String {
        let name = self.fresh("c");
        self.initializer(
            &name,
            &Values {
                dims: vec![values.len()],
                data: ValueData::I64(values),
            },
        );
        name
    }

    /// `name` holds `values[t]` at `sizes[t]`.
    fn constant(
        &mut self,
        name: &str,
        values: &[&Values],
        sizes: &[Vec<i64>],
        origin: &str,
    ) -> Result<(), OnnxError> {
        if values.iter().all(|v| *v == values[0]) {
            self.initializer(name, values[0]);
            return Ok(());
        }
        let shapes: Vec<&Vec<usize>> = values.iter().map(|v| &v.dims).collect();
        let bad = || {
            OnnxError::Unsupported(format!(
                "a constant of {origin} changes with the input size (shapes {shapes:?} at sizes \
                 {sizes:?}) in a way the graph cannot compute"
            ))
        };
        let rank = values[0].dims.len();
        if values.iter().any(|v| v.dims.len() != rank) {
            return Err(bad());
        }
        let table = *values.iter().max_by_key(|v| v.len()).expect("recordings");
        let mut ends = Vec::new();
        let mut axes = Vec::new();
        for axis in 0..rank {
            let sizes_along: Vec<i64> = values.iter().map(|v| v.dims[axis] as i64).collect();
            let sym = fit(&sizes_along, sizes).ok_or_else(bad)?;
            if sym.constant().is_none() {
                axes.push(axis as i64);
                ends.push(sym);
            }
        }
        for v in values {
            if v.dims.iter().zip(&table.dims).any(|(a, b)| a > b) {
                return Err(bad());
            }
            let strides = strides(&table.dims);
            let count: usize = v.dims.iter().product();
            let indices = (0..count).map(|flat| {
                let mut rest = flat;
                let mut index = 0;
                for axis in (0..rank).rev() {
                    index += (rest % v.dims[axis]) * strides[axis];
                    rest /= v.dims[axis];
                }
                index
            });
            if table.data.pick(indices) != v.data {
                return Err(bad());
            }
        }
        let table_name = format!("{name}_table");
        self.initializer(&table_name, table);
        let starts = self.int_constant(vec![0; axes.len()]);
        let ends = self.ints(&ends);
        let axes = self.int_constant(axes);
        self.nodes.push(node(
            "Slice",
            vec![table_name, starts, ends, axes],
            vec![name.to_string()],
            &[],
        ));
        Ok(())
    }

    /// A `[1]` int64 tensor holding the size of variable `k`.
    fn variable(&mut self, k: usize) -> String {
        let key = Sym {
            c: 1,
            powers: (0..self.sources.variables.len())
                .map(|i| u32::from(i == k))
                .collect(),
            d: 0,
        };
        if let Some(name) = self.syms.get(&key) {
            return name.clone();
        }
        let (input, axis) = self.sources.variables[k].clone();
        let shape = self.fresh("shape");
        self.nodes
            .push(node("Shape", vec![input], vec![shape.clone()], &[]));
        let index = self.int_constant(vec![axis as i64]);
        let name = self.fresh("size");
        self.nodes.push(node(
            "Gather",
            vec![shape, index],
            vec![name.clone()],
            &[("axis", Attr::Int(0))],
        ));
        self.syms.insert(key, name.clone());
        name
    }

    /// A `[1]` int64 tensor holding `sym`.
    fn sym(&mut self, sym: &Sym) -> String {
        if let Some(name) = self.syms.get(sym) {
            return name.clone();
        }
        let name = match sym.constant() {
            Some(value) => self.int_constant(vec![value]),
            None => {
                let mut product: Option<String> = None;
                for (k, power) in sym.powers.clone().into_iter().enumerate() {
                    for _ in 0..power {
                        let v = self.variable(k);
                        product = Some(match product {
                            None => v,
                            Some(p) => self.binary("Mul", p, v),
                        });
                    }
                }
                let mut value = product.expect("a variable term");
                if sym.c != 1 {
                    let c = self.int_constant(vec![sym.c]);
                    value = self.binary("Mul", value, c);
                }
                if sym.d != 0 {
                    let d = self.int_constant(vec![sym.d]);
                    value = self.binary("Add", value, d);
                }
                value
            }
        };
        self.syms.insert(sym.clone(), name.clone());
        name
    }

    fn binary(&mut self, op: &'static str, a: String, b: String) -> String {
        let name = self.fresh("size");
        self.nodes
            .push(node(op, vec![a, b], vec![name.clone()], &[]));
        name
    }

    /// An int64 vector of `syms`: one constant, or the pieces concatenated.
    fn ints(&mut self, syms: &[Sym]) -> String {
        if let Some(values) = syms.iter().map(Sym::constant).collect::<Option<Vec<_>>>() {
            return self.int_constant(values);
        }
        let mut pieces = Vec::new();
        let mut run = Vec::new();
        for sym in syms {
            match sym.constant() {
                Some(v) => run.push(v),
                None => {
                    if !run.is_empty() {
                        pieces.push(self.int_constant(std::mem::take(&mut run)));
                    }
                    pieces.push(self.sym(sym));
                }
            }
        }
        if !run.is_empty() {
            pieces.push(self.int_constant(run));
        }
        let name = self.fresh("shape");
        self.nodes.push(node(
            "Concat",
            pieces,
            vec![name.clone()],
            &[("axis", Attr::Int(0))],
        ));
        name
    }
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; dims.len()];
    for axis in (0..dims.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * dims[axis + 1];
    }
    strides
}

fn node(
    op: &str,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attrs: &[(&'static str, Attr)],
) -> NodeProto {
    NodeProto {
        input: inputs,
        name: format!("{op}_{}", outputs.first().map_or("", String::as_str)),
        output: outputs,
        op_type: op.to_string(),
        attribute: attrs.iter().map(|(n, a)| attribute(n, a)).collect(),
    }
}

fn attribute(name: &str, attr: &Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.to_string(),
        ..AttributeProto::default()
    };
    match attr {
        Attr::Int(i) => {
            a.i = *i;
            a.r#type = attribute_type::INT;
        }
        Attr::Ints(v) => {
            a.ints = v.clone();
            a.r#type = attribute_type::INTS;
        }
        Attr::Float(f) => {
            a.f = *f;
            a.r#type = attribute_type::FLOAT;
        }
        Attr::Tensor(v) => {
            a.t = Some(tensor("", v));
            a.r#type = attribute_type::TENSOR;
        }
    }
    a
}

pub fn tensor(name: &str, values: &Values) -> TensorProto {
    let (data_type, raw_data) = match &values.data {
        ValueData::F32(v) => (
            data_type::FLOAT,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        ValueData::I64(v) => (
            data_type::INT64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        ValueData::Bool(v) => (data_type::BOOL, v.iter().map(|b| u8::from(*b)).collect()),
    };
    TensorProto {
        dims: values.dims.iter().map(|d| *d as i64).collect(),
        data_type,
        name: name.to_string(),
        raw_data,
    }
}

/// `graph` without the nodes and initializers its outputs do not need.
pub fn prune(graph: &mut GraphProto) {
    let mut needed: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let mut kept = Vec::new();
    for node in graph.node.drain(..).rev() {
        if node.output.iter().any(|o| needed.contains(o)) {
            needed.extend(node.input.iter().filter(|i| !i.is_empty()).cloned());
            kept.push(node);
        }
    }
    kept.reverse();
    graph.node = kept;
    graph.initializer.retain(|t| needed.contains(&t.name));
    // Initializers that hold the same values are stored once.
    let mut seen: BTreeMap<(Vec<i64>, i32, Vec<u8>), String> = BTreeMap::new();
    let mut renamed: HashMap<String, String> = HashMap::new();
    graph.initializer.retain(|t| {
        let key = (t.dims.clone(), t.data_type, t.raw_data.clone());
        if t.raw_data.len() > 64 {
            return true;
        }
        match seen.get(&key) {
            Some(first) => {
                renamed.insert(t.name.clone(), first.clone());
                false
            }
            None => {
                seen.insert(key, t.name.clone());
                true
            }
        }
    });
    for node in &mut graph.node {
        for input in &mut node.input {
            if let Some(first) = renamed.get(input) {
                *input = first.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(pairs: &[(i64, i64)]) -> Vec<Vec<i64>> {
        pairs.iter().map(|(b, s)| vec![*b, *s]).collect()
    }

    #[test]
    fn sizes_are_fitted_to_the_simplest_form_that_gives_every_recording() {
        let at = sizes(&[(2, 32), (3, 64), (5, 32), (2, 96)]);
        let fitted = |values: &[i64]| fit(values, &at).map(|s| (s.c, s.powers, s.d));
        assert_eq!(fitted(&[7, 7, 7, 7]), Some((7, vec![0, 0], 0)));
        assert_eq!(fitted(&[2, 3, 5, 2]), Some((1, vec![1, 0], 0)));
        assert_eq!(fitted(&[32, 64, 32, 96]), Some((1, vec![0, 1], 0)));
        // Batch × heads, batch × length, a relative-position span, length².
        assert_eq!(fitted(&[24, 36, 60, 24]), Some((12, vec![1, 0], 0)));
        assert_eq!(fitted(&[64, 192, 160, 192]), Some((1, vec![1, 1], 0)));
        assert_eq!(fitted(&[63, 127, 63, 191]), Some((2, vec![0, 1], -1)));
        assert_eq!(fitted(&[1024, 4096, 1024, 9216]), Some((1, vec![0, 2], 0)));
        // What no such form gives is not fitted (the export is then an error).
        assert_eq!(fitted(&[1, 2, 3, 5]), None);
    }

    #[test]
    fn a_fitted_form_gives_the_value_at_other_sizes() {
        let at = sizes(&[(2, 32), (3, 64), (5, 32), (2, 96)]);
        let sym = fit(&[63, 127, 63, 191], &at).unwrap();
        assert_eq!(sym.at(&[7, 21]), 41);
        let sym = fit(&[64, 192, 160, 192], &at).unwrap();
        assert_eq!(sym.at(&[4, 10]), 40);
    }
}
