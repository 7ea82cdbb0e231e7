//! A plain interpreter for the ONNX graphs graft writes: every node as the ONNX operator
//! specification defines it, on ndarray, with nothing of burn. [`crate::model`]'s graphs are run
//! here at a size they were not recorded at and compared with graft's own forward pass, so an
//! export that does not compute what graft computes is an error rather than a file.

use std::collections::HashMap;

use ndarray::{ArrayD, Axis as NdAxis, Dimension, IxDyn, Zip};
use prost::Message;

use crate::OnnxError;
use crate::proto::{AttributeProto, ModelProto, NodeProto, TensorProto, data_type};

/// A tensor of one of the element types graft's graphs use.
#[derive(Debug, Clone)]
pub enum Value {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
    Bool(ArrayD<bool>),
}

impl Value {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Value::F32(a) => a.shape().to_vec(),
            Value::I64(a) => a.shape().to_vec(),
            Value::Bool(a) => a.shape().to_vec(),
        }
    }

    /// The float values, in row-major order.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Value::F32(a) => a.iter().copied().collect(),
            Value::I64(a) => a.iter().map(|v| *v as f32).collect(),
            Value::Bool(a) => a.iter().map(|v| f32::from(u8::from(*v))).collect(),
        }
    }
}

/// The most values one product may hold in the interpreter (1 GiB of f32): it keeps whole
/// attention matrices, which models with many thousands of tokens do not fit.
const MAX_ELEMENTS: usize = 1 << 28;

fn bad(message: impl Into<String>) -> OnnxError {
    OnnxError::Unsupported(message.into())
}

/// Runs the serialized model on `inputs` (by name) and returns its outputs, in order.
pub fn run(model: &[u8], inputs: &[(&str, Value)]) -> Result<Vec<Value>, OnnxError> {
    let model = ModelProto::decode(model).map_err(|e| bad(format!("not an ONNX model: {e}")))?;
    let graph = model.graph.ok_or_else(|| bad("the model has no graph"))?;
    let mut values: HashMap<String, Value> = HashMap::new();
    for tensor in &graph.initializer {
        values.insert(tensor.name.clone(), tensor_value(tensor)?);
    }
    for (name, value) in inputs {
        values.insert(name.to_string(), value.clone());
    }
    for node in &graph.node {
        let args: Vec<Option<&Value>> = node
            .input
            .iter()
            .map(|name| {
                if name.is_empty() {
                    Ok(None)
                } else {
                    values
                        .get(name)
                        .map(Some)
                        .ok_or_else(|| bad(format!("{}: no value {name}", node.name)))
                }
            })
            .collect::<Result<_, _>>()?;
        if node.op_type == "MatMul" {
            let (a, b) = (args[0].map(Value::shape), args[1].map(Value::shape));
            if let (Some(a), Some(b)) = (a, b) {
                let rows: usize = a[..a.len().saturating_sub(1)].iter().product();
                let batch: usize = b[..b.len().saturating_sub(2)].iter().product();
                let elements = rows * b.last().copied().unwrap_or(1) * batch.max(1);
                if elements > MAX_ELEMENTS {
                    return Err(bad(format!(
                        "{}: a product of {elements} values is more than the interpreter holds \
                         ({MAX_ELEMENTS})",
                        node.name
                    )));
                }
            }
        }
        let out = apply(node, &args)
            .map_err(|e| bad(format!("{} ({}): {e}", node.name, node.op_type)))?;
        values.insert(node.output[0].clone(), out);
    }
    graph
        .output
        .iter()
        .map(|o| {
            values
                .remove(&o.name)
                .ok_or_else(|| bad(format!("no output {}", o.name)))
        })
        .collect()
}

fn tensor_value(t: &TensorProto) -> Result<Value, OnnxError> {
    let shape: Vec<usize> = t.dims.iter().map(|d| *d as usize).collect();
    let shaped = |e| bad(format!("initializer {}: {e}", t.name));
    Ok(match t.data_type {
        data_type::FLOAT => {
            let v = t
                .raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Value::F32(ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(shaped)?)
        }
        data_type::INT64 => {
            let v = t
                .raw_data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            Value::I64(ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(shaped)?)
        }
        data_type::BOOL => {
            let v = t.raw_data.iter().map(|b| *b != 0).collect();
            Value::Bool(ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(shaped)?)
        }
        other => return Err(bad(format!("initializer {}: data type {other}", t.name))),
    })
}

struct Attrs<'a>(&'a [AttributeProto]);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.iter().find(|a| a.name == name)
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }
}

fn axis_of(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64) as usize
    } else {
        axis as usize
    }
}

fn f32s(v: &Value) -> Result<&ArrayD<f32>, String> {
    match v {
        Value::F32(a) => Ok(a),
        _ => Err("expected a float tensor".into()),
    }
}

fn i64s(v: &Value) -> Result<Vec<i64>, String> {
    match v {
        Value::I64(a) => Ok(a.iter().copied().collect()),
        _ => Err("expected an int64 tensor".into()),
    }
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let x = if i + a.len() >= rank {
                a[i + a.len() - rank]
            } else {
                1
            };
            let y = if i + b.len() >= rank {
                b[i + b.len() - rank]
            } else {
                1
            };
            match (x, y) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
            }
        })
        .collect()
}

fn zip2<A: Clone, B: Clone, C>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    f: impl Fn(&A, &B) -> C,
) -> Result<ArrayD<C>, String> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let a = a.broadcast(IxDyn(&shape)).ok_or("broadcast")?;
    let b = b.broadcast(IxDyn(&shape)).ok_or("broadcast")?;
    Ok(Zip::from(&a).and(&b).map_collect(f))
}

macro_rules! arith {
    ($a:expr, $b:expr, $f:expr, $g:expr) => {
        match ($a, $b) {
            (Value::F32(a), Value::F32(b)) => Value::F32(zip2(a, b, $f)?),
            (Value::I64(a), Value::I64(b)) => Value::I64(zip2(a, b, $g)?),
            _ => return Err("mismatched operand types".into()),
        }
    };
}

macro_rules! compare {
    ($a:expr, $b:expr, $op:tt) => {
        match ($a, $b) {
            (Value::F32(a), Value::F32(b)) => Value::Bool(zip2(a, b, |x, y| x $op y)?),
            (Value::I64(a), Value::I64(b)) => Value::Bool(zip2(a, b, |x, y| x $op y)?),
            (Value::Bool(a), Value::Bool(b)) => Value::Bool(zip2(a, b, |x, y| x $op y)?),
            _ => return Err("mismatched operand types".into()),
        }
    };
}

macro_rules! each {
    ($v:expr, |$a:ident| $body:expr) => {
        match $v {
            Value::F32($a) => Value::F32($body),
            Value::I64($a) => Value::I64($body),
            Value::Bool($a) => Value::Bool($body),
        }
    };
}

fn float_map(v: &Value, f: impl Fn(f32) -> f32) -> Result<Value, String> {
    Ok(Value::F32(f32s(v)?.mapv(f)))
}

fn apply(node: &NodeProto, args: &[Option<&Value>]) -> Result<Value, String> {
    let attrs = Attrs(&node.attribute);
    let arg = |i: usize| -> Result<&Value, String> {
        args.get(i)
            .copied()
            .flatten()
            .ok_or(format!("input {i} missing"))
    };
    let x = arg(0)?;
    Ok(match node.op_type.as_str() {
        "Identity" => x.clone(),
        "Exp" => float_map(x, f32::exp)?,
        "Log" => float_map(x, f32::ln)?,
        "Erf" => float_map(x, libm::erff)?,
        "Sqrt" => float_map(x, f32::sqrt)?,
        "Cos" => float_map(x, f32::cos)?,
        "Sin" => float_map(x, f32::sin)?,
        "Tanh" => float_map(x, f32::tanh)?,
        "Round" => float_map(x, f32::round_ties_even)?,
        "Floor" => float_map(x, f32::floor)?,
        "Ceil" => float_map(x, f32::ceil)?,
        "Reciprocal" => float_map(x, f32::recip)?,
        "Relu" => float_map(x, |v| v.max(0.0))?,
        "Sigmoid" => float_map(x, |v| 1.0 / (1.0 + (-v).exp()))?,
        "IsNaN" => Value::Bool(f32s(x)?.mapv(f32::is_nan)),
        "IsInf" => Value::Bool(f32s(x)?.mapv(f32::is_infinite)),
        "HardSigmoid" => {
            let (alpha, beta) = (attrs.float("alpha", 0.2), attrs.float("beta", 0.5));
            float_map(x, |v| (alpha * v + beta).clamp(0.0, 1.0))?
        }
        "LeakyRelu" => {
            let alpha = attrs.float("alpha", 0.01);
            float_map(x, |v| if v < 0.0 { alpha * v } else { v })?
        }
        "Abs" => match x {
            Value::F32(a) => Value::F32(a.mapv(f32::abs)),
            Value::I64(a) => Value::I64(a.mapv(i64::abs)),
            _ => return Err("Abs of booleans".into()),
        },
        "Neg" => match x {
            Value::F32(a) => Value::F32(a.mapv(|v| -v)),
            Value::I64(a) => Value::I64(a.mapv(|v| -v)),
            _ => return Err("Neg of booleans".into()),
        },
        "Sign" => match x {
            Value::F32(a) => Value::F32(a.mapv(|v| if v == 0.0 { 0.0 } else { v.signum() })),
            Value::I64(a) => Value::I64(a.mapv(i64::signum)),
            _ => return Err("Sign of booleans".into()),
        },
        "Not" => match x {
            Value::Bool(a) => Value::Bool(a.mapv(|v| !v)),
            _ => return Err("Not of numbers".into()),
        },
        "Add" => arith!(x, arg(1)?, |a, b| a + b, |a, b| a + b),
        "Sub" => arith!(x, arg(1)?, |a, b| a - b, |a, b| a - b),
        "Mul" => arith!(x, arg(1)?, |a, b| a * b, |a, b| a * b),
        "Div" => arith!(x, arg(1)?, |a, b| a / b, |a, b| a / b),
        "Max" => arith!(
            x,
            arg(1)?,
            |a: &f32, b: &f32| a.max(*b),
            |a: &i64, b: &i64| *a.max(b)
        ),
        "Min" => arith!(
            x,
            arg(1)?,
            |a: &f32, b: &f32| a.min(*b),
            |a: &i64, b: &i64| *a.min(b)
        ),
        "Pow" => match (x, arg(1)?) {
            (Value::F32(a), Value::F32(b)) => Value::F32(zip2(a, b, |x, y| x.powf(*y))?),
            (Value::I64(a), Value::I64(b)) => Value::I64(zip2(a, b, |x, y| x.pow(*y as u32))?),
            _ => return Err("Pow of these types".into()),
        },
        "PRelu" => match (x, arg(1)?) {
            (Value::F32(a), Value::F32(s)) => {
                Value::F32(zip2(a, s, |v, s| if *v < 0.0 { s * v } else { *v })?)
            }
            _ => return Err("PRelu of numbers".into()),
        },
        "Equal" => compare!(x, arg(1)?, ==),
        "Greater" => compare!(x, arg(1)?, >),
        "GreaterOrEqual" => compare!(x, arg(1)?, >=),
        "Less" => compare!(x, arg(1)?, <),
        "LessOrEqual" => compare!(x, arg(1)?, <=),
        "And" | "Or" | "Xor" => match (x, arg(1)?) {
            (Value::Bool(a), Value::Bool(b)) => Value::Bool(match node.op_type.as_str() {
                "And" => zip2(a, b, |x, y| *x && *y)?,
                "Or" => zip2(a, b, |x, y| *x || *y)?,
                _ => zip2(a, b, |x, y| x != y)?,
            }),
            _ => return Err("logic of numbers".into()),
        },
        "Where" => {
            let Value::Bool(c) = x else {
                return Err("a condition that is not boolean".into());
            };
            let (a, b) = (arg(1)?, arg(2)?);
            let shape = broadcast_shape(c.shape(), &broadcast_shape(&a.shape(), &b.shape())?)?;
            let c = c.broadcast(IxDyn(&shape)).ok_or("broadcast")?;
            macro_rules! pick {
                ($a:expr, $b:expr) => {{
                    let a = $a.broadcast(IxDyn(&shape)).ok_or("broadcast")?;
                    let b = $b.broadcast(IxDyn(&shape)).ok_or("broadcast")?;
                    Zip::from(&c)
                        .and(&a)
                        .and(&b)
                        .map_collect(|c, a, b| if *c { *a } else { *b })
                }};
            }
            match (a, b) {
                (Value::F32(a), Value::F32(b)) => Value::F32(pick!(a, b)),
                (Value::I64(a), Value::I64(b)) => Value::I64(pick!(a, b)),
                (Value::Bool(a), Value::Bool(b)) => Value::Bool(pick!(a, b)),
                _ => return Err("mismatched branches".into()),
            }
        }
        "Cast" => {
            let to = attrs.int("to", 0) as i32;
            let floats = || -> Vec<f64> {
                match x {
                    Value::F32(a) => a.iter().map(|v| f64::from(*v)).collect(),
                    Value::I64(a) => a.iter().map(|v| *v as f64).collect(),
                    Value::Bool(a) => a.iter().map(|v| f64::from(u8::from(*v))).collect(),
                }
            };
            let shape = IxDyn(&x.shape());
            let made = |e: ndarray::ShapeError| e.to_string();
            match to {
                data_type::FLOAT => Value::F32(
                    ArrayD::from_shape_vec(shape, floats().into_iter().map(|v| v as f32).collect())
                        .map_err(made)?,
                ),
                data_type::INT64 => match x {
                    Value::I64(a) => Value::I64(a.clone()),
                    _ => Value::I64(
                        ArrayD::from_shape_vec(
                            shape,
                            floats().into_iter().map(|v| v as i64).collect(),
                        )
                        .map_err(made)?,
                    ),
                },
                data_type::BOOL => Value::Bool(
                    ArrayD::from_shape_vec(shape, floats().into_iter().map(|v| v != 0.0).collect())
                        .map_err(made)?,
                ),
                other => return Err(format!("Cast to {other}")),
            }
        }
        "Shape" => {
            let shape: Vec<i64> = x.shape().iter().map(|d| *d as i64).collect();
            Value::I64(
                ArrayD::from_shape_vec(IxDyn(&[shape.len()]), shape).map_err(|e| e.to_string())?,
            )
        }
        "Reshape" => {
            let target = i64s(arg(1)?)?;
            let shape = x.shape();
            let total: usize = shape.iter().product();
            let mut dims: Vec<usize> = target
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    0 => shape[i],
                    -1 => 1,
                    d => *d as usize,
                })
                .collect();
            if let Some(i) = target.iter().position(|d| *d == -1) {
                let known: usize = dims.iter().product();
                dims[i] = total / known.max(1);
            }
            each!(x, |a| a
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(&dims))
                .map_err(|e| format!("reshape {shape:?} to {dims:?}: {e}"))?)
        }
        "Expand" => {
            let target: Vec<usize> = i64s(arg(1)?)?.iter().map(|d| *d as usize).collect();
            let shape = broadcast_shape(&x.shape(), &target)?;
            each!(x, |a| a
                .broadcast(IxDyn(&shape))
                .ok_or("broadcast")?
                .to_owned())
        }
        "Transpose" => {
            let perm: Vec<usize> = attrs
                .ints("perm")
                .ok_or("no perm")?
                .iter()
                .map(|p| *p as usize)
                .collect();
            each!(x, |a| a
                .clone()
                .permuted_axes(IxDyn(&perm))
                .as_standard_layout()
                .into_owned())
        }
        "Slice" => {
            let starts = i64s(arg(1)?)?;
            let ends = i64s(arg(2)?)?;
            let shape = x.shape();
            let axes = match args.get(3).copied().flatten() {
                Some(a) => i64s(a)?,
                None => (0..starts.len() as i64).collect(),
            };
            let mut out = x.clone();
            for ((start, end), axis) in starts.iter().zip(&ends).zip(&axes) {
                let axis = axis_of(*axis, shape.len());
                let size = shape[axis] as i64;
                let clamp = |v: i64| {
                    if v < 0 {
                        (v + size).max(0)
                    } else {
                        v.min(size)
                    }
                };
                let (s, e) = (clamp(*start) as usize, clamp(*end) as usize);
                let e = e.max(s);
                out = each!(&out, |a| a
                    .slice_axis(NdAxis(axis), ndarray::Slice::from(s..e))
                    .to_owned());
            }
            out
        }
        "Concat" => {
            let rank = x.shape().len();
            let axis = axis_of(attrs.int("axis", 0), rank);
            let all: Vec<&Value> = (0..args.len()).map(arg).collect::<Result<_, _>>()?;
            macro_rules! cat {
                ($variant:ident) => {{
                    let views = all
                        .iter()
                        .map(|v| match v {
                            Value::$variant(a) => Ok(a.view()),
                            _ => Err("mixed types".to_string()),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Value::$variant(
                        ndarray::concatenate(NdAxis(axis), &views).map_err(|e| e.to_string())?,
                    )
                }};
            }
            match x {
                Value::F32(_) => cat!(F32),
                Value::I64(_) => cat!(I64),
                Value::Bool(_) => cat!(Bool),
            }
        }
        "Gather" => {
            let indices = arg(1)?;
            let index_shape = indices.shape();
            let indices = i64s(indices)?;
            let shape = x.shape();
            let axis = axis_of(attrs.int("axis", 0), shape.len());
            let size = shape[axis] as i64;
            let indices: Vec<usize> = indices
                .iter()
                .map(|i| if *i < 0 { i + size } else { *i })
                .map(|i| {
                    usize::try_from(i)
                        .ok()
                        .filter(|i| (*i as i64) < size)
                        .ok_or(format!("index {i} outside 0..{size}"))
                })
                .collect::<Result<_, _>>()?;
            let mut out_shape = shape[..axis].to_vec();
            out_shape.extend(&index_shape);
            out_shape.extend(&shape[axis + 1..]);
            each!(x, |a| {
                let picked = a.select(NdAxis(axis), &indices);
                // `select` keeps the axis flat; give it the indices' shape.
                picked
                    .as_standard_layout()
                    .into_owned()
                    .into_shape_with_order(IxDyn(&out_shape))
                    .map_err(|e| e.to_string())?
            })
        }
        "GatherElements" => {
            let Value::I64(indices) = arg(1)? else {
                return Err("int64 indices".into());
            };
            let axis = axis_of(attrs.int("axis", 0), x.shape().len());
            each!(x, |a| {
                let mut out =
                    ArrayD::from_elem(indices.raw_dim(), a.first().cloned().unwrap_or_default());
                for (index, value) in out.indexed_iter_mut() {
                    let mut at = index.slice().to_vec();
                    at[axis] = indices[&index] as usize;
                    *value = a[IxDyn(&at)];
                }
                out
            })
        }
        "Tile" => {
            let repeats = i64s(arg(1)?)?;
            let mut out = x.clone();
            for (axis, times) in repeats.iter().enumerate() {
                if *times != 1 {
                    let copies = vec![out.clone(); *times as usize];
                    out = match &out {
                        Value::F32(_) => {
                            let v: Vec<_> = copies
                                .iter()
                                .map(|c| f32s(c).map(|a| a.view()))
                                .collect::<Result<_, _>>()?;
                            Value::F32(
                                ndarray::concatenate(NdAxis(axis), &v)
                                    .map_err(|e| e.to_string())?,
                            )
                        }
                        _ => return Err("Tile of non-floats".into()),
                    };
                }
            }
            out
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = i64s(x)?.iter().map(|d| *d as usize).collect();
            let value = attrs
                .get("value")
                .and_then(|a| a.t.as_ref())
                .ok_or("no value")?;
            match tensor_value(value).map_err(|e| e.to_string())? {
                Value::F32(v) => Value::F32(ArrayD::from_elem(
                    IxDyn(&shape),
                    v.iter().next().copied().unwrap_or(0.0),
                )),
                Value::I64(v) => Value::I64(ArrayD::from_elem(
                    IxDyn(&shape),
                    v.iter().next().copied().unwrap_or(0),
                )),
                Value::Bool(v) => Value::Bool(ArrayD::from_elem(
                    IxDyn(&shape),
                    v.iter().next().copied().unwrap_or(false),
                )),
            }
        }
        op @ ("ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd") => {
            let rank = x.shape().len();
            let axes = if op == "ReduceSum" {
                args.get(1).copied().flatten().map(i64s).transpose()?
            } else {
                attrs.ints("axes")
            };
            let mut axes: Vec<usize> = match axes {
                Some(axes) if !axes.is_empty() => axes.iter().map(|a| axis_of(*a, rank)).collect(),
                _ => (0..rank).collect(),
            };
            axes.sort_unstable();
            let keep = attrs.int("keepdims", 1) == 1;
            let reduce = |a: &ArrayD<f32>| -> ArrayD<f32> {
                let mut out = a.clone();
                for &axis in axes.iter().rev() {
                    let n = out.shape()[axis] as f32;
                    out = match op {
                        "ReduceSum" => out.sum_axis(NdAxis(axis)),
                        "ReduceMean" => out.sum_axis(NdAxis(axis)) / n,
                        "ReduceMax" => {
                            out.fold_axis(NdAxis(axis), f32::NEG_INFINITY, |m, v| m.max(*v))
                        }
                        "ReduceMin" => out.fold_axis(NdAxis(axis), f32::INFINITY, |m, v| m.min(*v)),
                        _ => out.fold_axis(NdAxis(axis), 1.0, |m, v| m * v),
                    };
                    if keep {
                        out.insert_axis_inplace(NdAxis(axis));
                    }
                }
                out
            };
            match x {
                Value::F32(a) => Value::F32(reduce(a)),
                Value::I64(a) => {
                    let reduced = reduce(&a.mapv(|v| v as f32));
                    Value::I64(reduced.mapv(|v| v as i64))
                }
                _ => return Err("reducing booleans".into()),
            }
        }
        op @ ("ArgMax" | "ArgMin") => {
            let a = f32s(x)?;
            let axis = axis_of(attrs.int("axis", 0), a.ndim());
            let mut out = a.map_axis(NdAxis(axis), |lane| {
                let mut best = 0;
                for (i, v) in lane.iter().enumerate() {
                    let better = if op == "ArgMax" {
                        *v > lane[best]
                    } else {
                        *v < lane[best]
                    };
                    if better {
                        best = i;
                    }
                }
                best as i64
            });
            if attrs.int("keepdims", 1) == 1 {
                out.insert_axis_inplace(NdAxis(axis));
            }
            Value::I64(out)
        }
        "Clip" => {
            let (lo, hi) = (arg(1)?, arg(2)?);
            match (x, lo, hi) {
                (Value::F32(a), Value::F32(l), Value::F32(h)) => {
                    let (l, h) = (
                        l.iter().next().copied().unwrap_or(f32::MIN),
                        h.iter().next().copied().unwrap_or(f32::MAX),
                    );
                    Value::F32(a.mapv(|v| v.max(l).min(h)))
                }
                (Value::I64(a), Value::I64(l), Value::I64(h)) => {
                    let (l, h) = (
                        l.iter().next().copied().unwrap_or(i64::MIN),
                        h.iter().next().copied().unwrap_or(i64::MAX),
                    );
                    Value::I64(a.mapv(|v| v.max(l).min(h)))
                }
                _ => return Err("Clip of these types".into()),
            }
        }
        "CumSum" => {
            let axis = axis_of(i64s(arg(1)?)?[0], x.shape().len());
            match x {
                Value::F32(a) => {
                    let mut out = a.clone();
                    out.accumulate_axis_inplace(NdAxis(axis), |prev, cur| *cur += *prev);
                    Value::F32(out)
                }
                Value::I64(a) => {
                    let mut out = a.clone();
                    out.accumulate_axis_inplace(NdAxis(axis), |prev, cur| *cur += *prev);
                    Value::I64(out)
                }
                _ => return Err("CumSum of booleans".into()),
            }
        }
        "Pad" => {
            let pads = i64s(arg(1)?)?;
            let a = f32s(x)?;
            let value = match args.get(2).copied().flatten() {
                Some(v) => f32s(v)?.iter().next().copied().unwrap_or(0.0),
                None => 0.0,
            };
            let rank = a.ndim();
            let shape: Vec<usize> = (0..rank)
                .map(|i| a.shape()[i] + pads[i] as usize + pads[i + rank] as usize)
                .collect();
            let mut out = ArrayD::from_elem(IxDyn(&shape), value);
            let mut view = out.view_mut();
            for (i, (pad, size)) in pads.iter().zip(a.shape()).enumerate() {
                let start = *pad as usize;
                view.slice_axis_inplace(NdAxis(i), ndarray::Slice::from(start..start + size));
            }
            view.assign(a);
            Value::F32(out)
        }
        "MatMul" => Value::F32(matmul(f32s(x)?, f32s(arg(1)?)?)?),
        "Softmax" | "LogSoftmax" => {
            let a = f32s(x)?;
            let axis = axis_of(attrs.int("axis", -1), a.ndim());
            let mut out = a.clone();
            for mut lane in out.lanes_mut(NdAxis(axis)) {
                let max = lane.fold(f32::NEG_INFINITY, |m, v| m.max(*v));
                let sum: f32 = lane.iter().map(|v| (v - max).exp()).sum();
                if node.op_type == "Softmax" {
                    lane.mapv_inplace(|v| (v - max).exp() / sum);
                } else {
                    lane.mapv_inplace(|v| v - max - sum.ln());
                }
            }
            Value::F32(out)
        }
        "LayerNormalization" => {
            let a = f32s(x)?;
            let scale = f32s(arg(1)?)?;
            let epsilon = attrs.float("epsilon", 1e-5);
            if axis_of(attrs.int("axis", -1), a.ndim()) != a.ndim() - 1 {
                return Err("LayerNormalization over more than the last axis".into());
            }
            let mut out = a.clone();
            for mut lane in out.lanes_mut(NdAxis(a.ndim() - 1)) {
                let n = lane.len() as f32;
                let mean = lane.sum() / n;
                let var = lane.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
                let inv = 1.0 / (var + epsilon).sqrt();
                lane.mapv_inplace(|v| (v - mean) * inv);
            }
            let mut out = zip2(&out, scale, |v, s| v * s)?;
            if let Some(bias) = args.get(2).copied().flatten() {
                out = zip2(&out, f32s(bias)?, |v, b| v + b)?;
            }
            Value::F32(out)
        }
        "BatchNormalization" => {
            let a = f32s(x)?;
            let [scale, bias, mean, var] = [1, 2, 3, 4].map(|i| {
                arg(i)
                    .and_then(f32s)
                    .map(|v| v.iter().copied().collect::<Vec<f32>>())
            });
            let (scale, bias, mean, var) = (scale?, bias?, mean?, var?);
            let epsilon = attrs.float("epsilon", 1e-5);
            let mut out = a.clone();
            for (c, mut channel) in out.axis_iter_mut(NdAxis(1)).enumerate() {
                let inv = scale[c] / (var[c] + epsilon).sqrt();
                channel.mapv_inplace(|v| (v - mean[c]) * inv + bias[c]);
            }
            Value::F32(out)
        }
        "Conv" => Value::F32(conv(
            f32s(x)?,
            f32s(arg(1)?)?,
            args.get(2).copied().flatten().map(f32s).transpose()?,
            &attrs,
        )?),
        "GlobalAveragePool" => {
            let a = f32s(x)?;
            let mut out = a.clone();
            for axis in (2..a.ndim()).rev() {
                out = out.mean_axis(NdAxis(axis)).ok_or("empty")?;
                out.insert_axis_inplace(NdAxis(axis));
            }
            Value::F32(out)
        }
        op @ ("AveragePool" | "MaxPool") => Value::F32(pool(f32s(x)?, &attrs, op == "MaxPool")?),
        other => return Err(format!("the interpreter has no {other}")),
    })
}

fn matmul(a: &ArrayD<f32>, b: &ArrayD<f32>) -> Result<ArrayD<f32>, String> {
    let (ra, rb) = (a.ndim(), b.ndim());
    if ra < 2 || rb < 2 {
        return Err("MatMul of vectors".into());
    }
    let (m, k, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 1]);
    if b.shape()[rb - 2] != k {
        return Err(format!("MatMul of {:?} and {:?}", a.shape(), b.shape()));
    }
    let batch = broadcast_shape(&a.shape()[..ra - 2], &b.shape()[..rb - 2])?;
    let count: usize = batch.iter().product();
    let expand = |x: &ArrayD<f32>, rows: usize, cols: usize| -> Result<ArrayD<f32>, String> {
        let mut shape = batch.clone();
        shape.extend([rows, cols]);
        let full = x.broadcast(IxDyn(&shape)).ok_or("broadcast")?;
        full.as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&[count, rows, cols]))
            .map_err(|e| e.to_string())
    };
    let (a3, b3) = (expand(a, m, k)?, expand(b, k, n)?);
    let mut out = ndarray::Array3::<f32>::zeros((count, m, n));
    for i in 0..count {
        let lhs = a3
            .index_axis(NdAxis(0), i)
            .into_dimensionality::<ndarray::Ix2>()
            .map_err(|e| e.to_string())?;
        let rhs = b3
            .index_axis(NdAxis(0), i)
            .into_dimensionality::<ndarray::Ix2>()
            .map_err(|e| e.to_string())?;
        out.index_axis_mut(NdAxis(0), i).assign(&lhs.dot(&rhs));
    }
    let mut shape = batch;
    shape.extend([m, n]);
    out.into_dyn()
        .into_shape_with_order(IxDyn(&shape))
        .map_err(|e| e.to_string())
}

/// Spatial geometry of a convolution or pool: kernel, strides, pads (begin, end), dilations.
struct Window {
    kernel: Vec<usize>,
    strides: Vec<usize>,
    begin: Vec<usize>,
    end: Vec<usize>,
    dilations: Vec<usize>,
}

impl Window {
    fn read(attrs: &Attrs, kernel: Vec<usize>) -> Window {
        let d = kernel.len();
        let get = |name: &str, default: usize| -> Vec<usize> {
            attrs
                .ints(name)
                .map(|v| v.iter().map(|x| *x as usize).collect())
                .unwrap_or_else(|| vec![default; d])
        };
        let pads = attrs
            .ints("pads")
            .map(|v| v.iter().map(|x| *x as usize).collect::<Vec<_>>())
            .unwrap_or_else(|| vec![0; 2 * d]);
        Window {
            strides: get("strides", 1),
            dilations: get("dilations", 1),
            begin: pads[..d].to_vec(),
            end: pads[d..].to_vec(),
            kernel,
        }
    }

    fn out_size(&self, axis: usize, input: usize, ceil: bool) -> usize {
        let span = self.dilations[axis] * (self.kernel[axis] - 1) + 1;
        let padded = input + self.begin[axis] + self.end[axis];
        let steps = padded.saturating_sub(span);
        if ceil {
            steps.div_ceil(self.strides[axis]) + 1
        } else {
            steps / self.strides[axis] + 1
        }
    }
}

/// Convolutions over 1 or 2 spatial axes (as `[.., 1, w]` for 1), by columns and a product.
fn conv(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    attrs: &Attrs,
) -> Result<ArrayD<f32>, String> {
    let one_d = x.ndim() == 3;
    let x4 = if one_d {
        x.clone().insert_axis(NdAxis(2))
    } else {
        x.clone()
    };
    let w4 = if one_d {
        w.clone().insert_axis(NdAxis(2))
    } else {
        w.clone()
    };
    let mut window = Window::read(attrs, w4.shape()[2..].to_vec());
    if one_d {
        window.strides.insert(0, 1);
        window.dilations.insert(0, 1);
        window.begin.insert(0, 0);
        window.end.insert(0, 0);
    }
    let groups = attrs.int("group", 1) as usize;
    let (n, c, h, wd) = (x4.shape()[0], x4.shape()[1], x4.shape()[2], x4.shape()[3]);
    let (oc, cg, kh, kw) = (w4.shape()[0], w4.shape()[1], w4.shape()[2], w4.shape()[3]);
    if cg * groups != c {
        return Err(format!("Conv of {c} channels with {cg}·{groups}"));
    }
    let (oh, ow) = (window.out_size(0, h, false), window.out_size(1, wd, false));
    let ocg = oc / groups;
    let w2 = w4
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((oc, cg * kh * kw))
        .map_err(|e| e.to_string())?;
    let mut out = ndarray::Array4::<f32>::zeros((n, oc, oh, ow));
    for b in 0..n {
        for g in 0..groups {
            let mut cols = ndarray::Array2::<f32>::zeros((cg * kh * kw, oh * ow));
            for ci in 0..cg {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let row = (ci * kh + ky) * kw + kx;
                        for oy in 0..oh {
                            let iy = (oy * window.strides[0] + ky * window.dilations[0]) as isize
                                - window.begin[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for ox in 0..ow {
                                let ix = (ox * window.strides[1] + kx * window.dilations[1])
                                    as isize
                                    - window.begin[1] as isize;
                                if ix >= 0 && ix < wd as isize {
                                    cols[[row, oy * ow + ox]] =
                                        x4[[b, g * cg + ci, iy as usize, ix as usize]];
                                }
                            }
                        }
                    }
                }
            }
            let weights = w2.slice(ndarray::s![g * ocg..(g + 1) * ocg, ..]);
            let product = weights.dot(&cols);
            for o in 0..ocg {
                let bias = bias.map_or(0.0, |bias| bias[[g * ocg + o]]);
                for p in 0..oh * ow {
                    out[[b, g * ocg + o, p / ow, p % ow]] = product[[o, p]] + bias;
                }
            }
        }
    }
    let out = out.into_dyn();
    Ok(if one_d {
        out.remove_axis(NdAxis(2))
    } else {
        out
    })
}

fn pool(x: &ArrayD<f32>, attrs: &Attrs, max: bool) -> Result<ArrayD<f32>, String> {
    if x.ndim() != 4 {
        return Err("pooling other than 2-D".into());
    }
    let kernel: Vec<usize> = attrs
        .ints("kernel_shape")
        .ok_or("no kernel_shape")?
        .iter()
        .map(|k| *k as usize)
        .collect();
    let window = Window::read(attrs, kernel);
    let ceil = attrs.int("ceil_mode", 0) == 1;
    let include_pad = attrs.int("count_include_pad", 0) == 1;
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (oh, ow) = (window.out_size(0, h, ceil), window.out_size(1, w, ceil));
    let mut out = ndarray::Array4::<f32>::zeros((n, c, oh, ow));
    for ((b, ch, oy, ox), value) in out.indexed_iter_mut() {
        let (mut acc, mut count, mut padded) = (if max { f32::NEG_INFINITY } else { 0.0 }, 0, 0);
        for ky in 0..window.kernel[0] {
            for kx in 0..window.kernel[1] {
                let iy = (oy * window.strides[0] + ky * window.dilations[0]) as isize
                    - window.begin[0] as isize;
                let ix = (ox * window.strides[1] + kx * window.dilations[1]) as isize
                    - window.begin[1] as isize;
                let inside_pads =
                    iy < (h + window.end[0]) as isize && ix < (w + window.end[1]) as isize;
                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                    if inside_pads {
                        padded += 1;
                    }
                    continue;
                }
                let v = x[[b, ch, iy as usize, ix as usize]];
                if max {
                    acc = acc.max(v);
                } else {
                    acc += v;
                }
                count += 1;
            }
        }
        *value = if max {
            acc
        } else {
            let divisor = if include_pad { count + padded } else { count };
            acc / divisor.max(1) as f32
        };
    }
    Ok(out.into_dyn())
}
