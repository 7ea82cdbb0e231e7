//! One recorded burn graph as a list of ONNX steps. Shapes and index ranges stay plain integers
//! here (`Arg::Ints`); [`crate::merge`] compares the steps of graphs recorded at other sizes to
//! tell which of them follow the batch or the sequence length.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{DType, TensorData};
use burn_ir::{
    ActivationOperationIr, BaseOperationIr, BinaryOpIr, BoolOperationIr, FloatOperationIr,
    IntOperationIr, ModuleOperationIr, NumericOperationIr, OperationIr, ScalarIr, ScalarOpIr,
    TensorId, TensorIr, UnaryOpIr,
};

use crate::OnnxError;

/// A constant: its shape and values in the ONNX element type.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    pub dims: Vec<usize>,
    pub data: ValueData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValueData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

impl ValueData {
    fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::Bool(v) => v.len(),
        }
    }

    /// The values at `indices` (in order), of the same type.
    pub fn pick(&self, indices: impl Iterator<Item = usize>) -> ValueData {
        match self {
            Self::F32(v) => Self::F32(indices.map(|i| v[i]).collect()),
            Self::I64(v) => Self::I64(indices.map(|i| v[i]).collect()),
            Self::Bool(v) => Self::Bool(indices.map(|i| v[i]).collect()),
        }
    }
}

/// An input of a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// A tensor of the graph by name (empty: an omitted optional input).
    Name(String),
    /// An int64 vector computed from the shapes: a target shape, slice bounds.
    Ints(Vec<i64>),
    /// A constant.
    Data(Values),
    /// The same constant as the first recording's at this place.
    SameAsFirst,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Tensor(Values),
}

/// One ONNX node, or an initializer when `op` is empty (its one input is the value).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub op: &'static str,
    pub inputs: Vec<Arg>,
    pub outputs: Vec<String>,
    pub attrs: Vec<(&'static str, Attr)>,
    /// Where it came from, for error messages.
    pub origin: String,
}

/// The ONNX element type of a burn dtype; graphs are exported in f32.
pub fn elem_type(dtype: DType) -> Result<i32, OnnxError> {
    use crate::proto::data_type as t;
    Ok(match dtype {
        DType::F32 | DType::Flex32 => t::FLOAT,
        DType::I64
        | DType::I32
        | DType::I16
        | DType::I8
        | DType::U64
        | DType::U32
        | DType::U16
        | DType::U8 => t::INT64,
        DType::Bool(_) => t::BOOL,
        other => {
            return Err(OnnxError::Unsupported(format!(
                "{other:?} tensors (ONNX models are exported in f32)"
            )));
        }
    })
}

/// A recorded constant in the ONNX element type of its dtype.
pub fn values_of(data: &TensorData) -> Result<Values, OnnxError> {
    let dims = data.shape().to_vec();
    let bad = |e| OnnxError::Unsupported(format!("a constant of {:?}: {e:?}", data.dtype()));
    let data = match elem_type(data.dtype())? {
        crate::proto::data_type::FLOAT => {
            ValueData::F32(data.clone().convert::<f32>().try_to_vec().map_err(bad)?)
        }
        crate::proto::data_type::BOOL => ValueData::Bool(data.iter::<bool>().collect()),
        _ => ValueData::I64(data.clone().convert::<i64>().try_to_vec().map_err(bad)?),
    };
    Ok(Values { dims, data })
}

fn scalar(value: &ScalarIr, like: DType) -> Result<Values, OnnxError> {
    let as_f64 = match *value {
        ScalarIr::Float(x) => x,
        ScalarIr::Int(x) => x as f64,
        ScalarIr::UInt(x) => x as f64,
        ScalarIr::Bool(x) => f64::from(u8::from(x)),
    };
    let data = match elem_type(like)? {
        crate::proto::data_type::FLOAT => ValueData::F32(vec![as_f64 as f32]),
        crate::proto::data_type::BOOL => ValueData::Bool(vec![as_f64 != 0.0]),
        _ => ValueData::I64(vec![match *value {
            ScalarIr::Int(x) => x,
            ScalarIr::UInt(x) => x as i64,
            _ => as_f64 as i64,
        }]),
    };
    Ok(Values {
        dims: Vec::new(),
        data,
    })
}

fn ints(values: impl IntoIterator<Item = usize>) -> Vec<i64> {
    values.into_iter().map(|v| v as i64).collect()
}

fn dims(t: &TensorIr) -> Vec<i64> {
    ints(t.shape.iter().copied())
}

/// Turns one recorded graph into steps. `inputs` and `outputs` name the graph's boundary tensors.
pub fn translate(
    operations: &[OperationIr],
    values: &BTreeMap<TensorId, TensorData>,
    inputs: &[(TensorId, String)],
    outputs: &[(TensorId, String)],
) -> Result<Vec<Step>, OnnxError> {
    let mut t = Translator {
        names: inputs.iter().chain(outputs).cloned().collect(),
        inputs: inputs.iter().map(|(id, _)| *id).collect(),
        next: 0,
        steps: Vec::new(),
        values,
        origin: String::new(),
    };
    for (index, op) in operations.iter().enumerate() {
        t.origin = format!("operation {index} ({})", op_name(op));
        t.operation(op)?;
    }
    Ok(t.steps)
}

/// `Matmul (Float)`: the operation and its kind, from the IR's debug form.
pub fn op_name(op: &OperationIr) -> String {
    let text = format!("{op:?}");
    let head = text.split(" {").next().unwrap_or(&text);
    let parts: Vec<&str> = head
        .split('(')
        .map(|p| p.rsplit(", ").next().unwrap_or(p).trim())
        .filter(|p| !p.is_empty() && !p.ends_with("Ir"))
        .collect();
    match parts.as_slice() {
        [] => head.to_string(),
        [only] => only.to_string(),
        [kind, .., name] => format!("{name} ({kind})"),
    }
}

struct Translator<'a> {
    names: HashMap<TensorId, String>,
    /// The graph's inputs: their recorded values are placeholders, not constants.
    inputs: std::collections::HashSet<TensorId>,
    next: usize,
    steps: Vec<Step>,
    values: &'a BTreeMap<TensorId, TensorData>,
    origin: String,
}

impl Translator<'_> {
    fn name(&mut self, tensor: &TensorIr) -> String {
        if let Some(name) = self.names.get(&tensor.id) {
            return name.clone();
        }
        let name = format!("t{}", self.next);
        self.next += 1;
        self.names.insert(tensor.id, name.clone());
        name
    }

    fn fresh(&mut self) -> String {
        let name = format!("t{}", self.next);
        self.next += 1;
        name
    }

    fn arg(&mut self, tensor: &TensorIr) -> Arg {
        Arg::Name(self.name(tensor))
    }

    fn push(
        &mut self,
        op: &'static str,
        inputs: Vec<Arg>,
        output: String,
        attrs: Vec<(&'static str, Attr)>,
    ) -> String {
        self.steps.push(Step {
            op,
            inputs,
            outputs: vec![output.clone()],
            attrs,
            origin: self.origin.clone(),
        });
        output
    }

    /// `op` on the operation's inputs into its output tensor.
    fn node(&mut self, op: &'static str, inputs: Vec<Arg>, out: &TensorIr) {
        let output = self.name(out);
        self.push(op, inputs, output, Vec::new());
    }

    fn node_with(
        &mut self,
        op: &'static str,
        inputs: Vec<Arg>,
        out: &TensorIr,
        attrs: Vec<(&'static str, Attr)>,
    ) {
        let output = self.name(out);
        self.push(op, inputs, output, attrs);
    }

    fn unary(&mut self, op: &'static str, u: &UnaryOpIr) {
        let input = self.arg(&u.input);
        self.node(op, vec![input], &u.out);
    }

    fn binary(&mut self, op: &'static str, b: &BinaryOpIr) {
        let (lhs, rhs) = (self.arg(&b.lhs), self.arg(&b.rhs));
        self.node(op, vec![lhs, rhs], &b.out);
    }

    fn with_scalar(&mut self, op: &'static str, s: &ScalarOpIr) -> Result<(), OnnxError> {
        let lhs = self.arg(&s.lhs);
        let rhs = Arg::Data(scalar(&s.rhs, s.lhs.dtype)?);
        self.node(op, vec![lhs, rhs], &s.out);
        Ok(())
    }

    /// An operation with no translation, named by its variant.
    fn unsupported_op(&self, op: &impl std::fmt::Debug) -> OnnxError {
        let name = format!("{op:?}");
        self.unsupported(name.split(['(', ' ']).next().unwrap_or("?"))
    }

    fn unsupported(&self, what: &str) -> OnnxError {
        OnnxError::Unsupported(format!("{what} ({})", self.origin))
    }

    fn operation(&mut self, op: &OperationIr) -> Result<(), OnnxError> {
        match op {
            OperationIr::Drop(_) => Ok(()),
            OperationIr::Init(init) if self.inputs.contains(&init.out.id) => Ok(()),
            OperationIr::Init(init) => {
                let data = self.values.get(&init.out.id).ok_or_else(|| {
                    self.unsupported("a tensor initialized without a recorded value")
                })?;
                let values = values_of(data)?;
                let output = self.name(&init.out);
                self.push("", vec![Arg::Data(values)], output, Vec::new());
                Ok(())
            }
            OperationIr::BaseFloat(b) | OperationIr::BaseInt(b) | OperationIr::BaseBool(b) => {
                self.base(b)
            }
            OperationIr::NumericFloat(_, n) | OperationIr::NumericInt(_, n) => self.numeric(n),
            OperationIr::Float(_, f) => self.float(f),
            OperationIr::Int(i) => match i {
                IntOperationIr::IntoFloat(c) => {
                    let input = self.arg(&c.input);
                    self.cast(input, &c.out)
                }
                IntOperationIr::Matmul(m) => {
                    let (lhs, rhs) = (self.arg(&m.lhs), self.arg(&m.rhs));
                    self.node("MatMul", vec![lhs, rhs], &m.out);
                    Ok(())
                }
                _ => Err(self.unsupported("bitwise operations")),
            },
            OperationIr::Bool(b) => {
                match b {
                    BoolOperationIr::IntoFloat(c) | BoolOperationIr::IntoInt(c) => {
                        let input = self.arg(&c.input);
                        return self.cast(input, &c.out);
                    }
                    BoolOperationIr::Not(u) => self.unary("Not", u),
                    BoolOperationIr::And(b) => self.binary("And", b),
                    BoolOperationIr::Or(b) => self.binary("Or", b),
                    BoolOperationIr::Xor(b) => self.binary("Xor", b),
                }
                Ok(())
            }
            OperationIr::Module(m) => self.module(m),
            OperationIr::Activation(a) => self.activation(a),
            OperationIr::Custom(c) => Err(self.unsupported(&format!("custom operation {}", c.id))),
            OperationIr::Distributed(_) => Err(self.unsupported("distributed operations")),
        }
    }

    fn cast(&mut self, input: Arg, out: &TensorIr) -> Result<(), OnnxError> {
        let to = elem_type(out.dtype)?;
        self.node_with("Cast", vec![input], out, vec![("to", Attr::Int(to.into()))]);
        Ok(())
    }

    fn base(&mut self, op: &BaseOperationIr) -> Result<(), OnnxError> {
        match op {
            BaseOperationIr::Reshape(r) => {
                let input = self.arg(&r.input);
                self.node("Reshape", vec![input, Arg::Ints(dims(&r.out))], &r.out);
            }
            BaseOperationIr::Expand(r) => {
                let input = self.arg(&r.input);
                self.node("Expand", vec![input, Arg::Ints(dims(&r.out))], &r.out);
            }
            BaseOperationIr::SwapDims(s) => {
                let mut perm: Vec<i64> = ints(0..s.input.shape.num_dims());
                perm.swap(s.dim1, s.dim2);
                let input = self.arg(&s.input);
                self.node_with(
                    "Transpose",
                    vec![input],
                    &s.out,
                    vec![("perm", Attr::Ints(perm))],
                );
            }
            BaseOperationIr::Permute(p) => {
                let input = self.arg(&p.input);
                let perm = ints(p.axes.iter().copied());
                self.node_with(
                    "Transpose",
                    vec![input],
                    &p.out,
                    vec![("perm", Attr::Ints(perm))],
                );
            }
            BaseOperationIr::Slice(s) => {
                let shape = &s.tensor.shape;
                let (mut starts, mut ends, mut axes, mut steps) = (vec![], vec![], vec![], vec![]);
                for (axis, range) in s.ranges.iter().enumerate() {
                    let size = shape[axis] as isize;
                    let start = if range.start < 0 {
                        range.start + size
                    } else {
                        range.start
                    };
                    let end = match range.end {
                        Some(end) if end < 0 => end + size,
                        Some(end) => end.min(size),
                        None => size,
                    };
                    if range.step != 1 {
                        return Err(self.unsupported("a slice with a step"));
                    }
                    if start == 0 && end == size {
                        continue;
                    }
                    starts.push(start as i64);
                    // To the end of an axis is written as the end of any axis, so it need not
                    // follow the axis's size.
                    ends.push(if end == size { i64::MAX } else { end as i64 });
                    axes.push(axis as i64);
                    steps.push(1);
                }
                let input = self.arg(&s.tensor);
                if axes.is_empty() {
                    self.node("Identity", vec![input], &s.out);
                } else {
                    self.node(
                        "Slice",
                        vec![
                            input,
                            Arg::Ints(starts),
                            Arg::Ints(ends),
                            Arg::Data(int_vector(axes)),
                            Arg::Data(int_vector(steps)),
                        ],
                        &s.out,
                    );
                }
            }
            BaseOperationIr::Select(s) => {
                let (tensor, indices) = (self.arg(&s.tensor), self.arg(&s.indices));
                self.node_with(
                    "Gather",
                    vec![tensor, indices],
                    &s.out,
                    vec![("axis", Attr::Int(s.dim as i64))],
                );
            }
            BaseOperationIr::Gather(g) => {
                let (tensor, indices) = (self.arg(&g.tensor), self.arg(&g.indices));
                self.node_with(
                    "GatherElements",
                    vec![tensor, indices],
                    &g.out,
                    vec![("axis", Attr::Int(g.dim as i64))],
                );
            }
            BaseOperationIr::MaskWhere(m) => {
                let (mask, value, tensor) =
                    (self.arg(&m.mask), self.arg(&m.value), self.arg(&m.tensor));
                self.node("Where", vec![mask, value, tensor], &m.out);
            }
            BaseOperationIr::MaskFill(m) => {
                let (mask, tensor) = (self.arg(&m.mask), self.arg(&m.tensor));
                let value = Arg::Data(scalar(&m.value, m.tensor.dtype)?);
                self.node("Where", vec![mask, value, tensor], &m.out);
            }
            BaseOperationIr::Equal(b) => self.binary("Equal", b),
            BaseOperationIr::EqualElem(s) => self.with_scalar("Equal", s)?,
            BaseOperationIr::NotEqual(b) => {
                let (lhs, rhs) = (self.arg(&b.lhs), self.arg(&b.rhs));
                let equal = self.fresh();
                self.push("Equal", vec![lhs, rhs], equal.clone(), Vec::new());
                self.node("Not", vec![Arg::Name(equal)], &b.out);
            }
            BaseOperationIr::NotEqualElem(s) => {
                let lhs = self.arg(&s.lhs);
                let rhs = Arg::Data(scalar(&s.rhs, s.lhs.dtype)?);
                let equal = self.fresh();
                self.push("Equal", vec![lhs, rhs], equal.clone(), Vec::new());
                self.node("Not", vec![Arg::Name(equal)], &s.out);
            }
            BaseOperationIr::RepeatDim(r) => {
                let mut repeats = vec![1i64; r.tensor.shape.num_dims()];
                repeats[r.dim] = r.times as i64;
                let input = self.arg(&r.tensor);
                self.node("Tile", vec![input, Arg::Ints(repeats)], &r.out);
            }
            BaseOperationIr::Cat(c) => {
                let inputs = c.tensors.iter().map(|t| self.arg(t)).collect();
                self.node_with(
                    "Concat",
                    inputs,
                    &c.out,
                    vec![("axis", Attr::Int(c.dim as i64))],
                );
            }
            BaseOperationIr::Cast(c) => {
                let input = self.arg(&c.input);
                self.cast(input, &c.out)?;
            }
            BaseOperationIr::Empty(c) | BaseOperationIr::Zeros(c) => {
                self.constant_of_shape(&c.out, &ScalarIr::Int(0))?
            }
            BaseOperationIr::Ones(c) => self.constant_of_shape(&c.out, &ScalarIr::Int(1))?,
            other => return Err(self.unsupported_op(other)),
        }
        Ok(())
    }

    fn constant_of_shape(&mut self, out: &TensorIr, value: &ScalarIr) -> Result<(), OnnxError> {
        let mut value = scalar(value, out.dtype)?;
        value.dims = vec![1];
        self.node_with(
            "ConstantOfShape",
            vec![Arg::Ints(dims(out))],
            out,
            vec![("value", Attr::Tensor(value))],
        );
        Ok(())
    }

    fn reduce_dims(
        &mut self,
        op: &'static str,
        input: &TensorIr,
        out: &TensorIr,
        axes: Vec<i64>,
    ) -> Result<(), OnnxError> {
        let x = self.arg(input);
        // ReduceSum takes its axes as an input since opset 13; the others as an attribute
        // until opset 18.
        if op == "ReduceSum" {
            self.node_with(
                op,
                vec![x, Arg::Data(int_vector(axes))],
                out,
                vec![("keepdims", Attr::Int(1))],
            );
        } else {
            self.node_with(
                op,
                vec![x],
                out,
                vec![("axes", Attr::Ints(axes)), ("keepdims", Attr::Int(1))],
            );
        }
        Ok(())
    }

    /// A reduction over every element, shaped `[1]` as burn returns it.
    fn reduce_all(
        &mut self,
        op: &'static str,
        input: &TensorIr,
        out: &TensorIr,
    ) -> Result<(), OnnxError> {
        let x = self.arg(input);
        let reduced = self.fresh();
        self.push(
            op,
            vec![x],
            reduced.clone(),
            vec![("keepdims", Attr::Int(0))],
        );
        self.node("Reshape", vec![Arg::Name(reduced), Arg::Ints(vec![1])], out);
        Ok(())
    }

    fn numeric(&mut self, op: &NumericOperationIr) -> Result<(), OnnxError> {
        use NumericOperationIr as N;
        match op {
            N::Add(b) => self.binary("Add", b),
            N::AddScalar(s) => self.with_scalar("Add", s)?,
            N::Sub(b) => self.binary("Sub", b),
            N::SubScalar(s) => self.with_scalar("Sub", s)?,
            N::Mul(b) => self.binary("Mul", b),
            N::MulScalar(s) => self.with_scalar("Mul", s)?,
            N::Div(b) => self.binary("Div", b),
            N::DivScalar(s) => self.with_scalar("Div", s)?,
            N::Abs(u) => self.unary("Abs", u),
            N::Neg(u) => self.unary("Neg", u),
            N::Sign(u) => self.unary("Sign", u),
            N::Full(f) => self.constant_of_shape(&f.out, &f.value)?,
            N::MeanDim(r) => {
                self.reduce_dims("ReduceMean", &r.input, &r.out, vec![r.axis as i64])?
            }
            N::SumDim(r) => self.reduce_dims("ReduceSum", &r.input, &r.out, vec![r.axis as i64])?,
            N::SumDims(r) => {
                self.reduce_dims("ReduceSum", &r.input, &r.out, ints(r.axes.iter().copied()))?
            }
            N::MaxDim(r) => self.reduce_dims("ReduceMax", &r.input, &r.out, vec![r.axis as i64])?,
            N::MinDim(r) => self.reduce_dims("ReduceMin", &r.input, &r.out, vec![r.axis as i64])?,
            N::ProdDim(r) => {
                self.reduce_dims("ReduceProd", &r.input, &r.out, vec![r.axis as i64])?
            }
            N::Sum(r) => self.reduce_all("ReduceSum", &r.input, &r.out)?,
            N::Mean(r) => self.reduce_all("ReduceMean", &r.input, &r.out)?,
            N::Max(r) => self.reduce_all("ReduceMax", &r.input, &r.out)?,
            N::Min(r) => self.reduce_all("ReduceMin", &r.input, &r.out)?,
            N::ArgMax(r) | N::ArgMin(r) => {
                let op = if matches!(op, N::ArgMax(_)) {
                    "ArgMax"
                } else {
                    "ArgMin"
                };
                let x = self.arg(&r.input);
                self.node_with(
                    op,
                    vec![x],
                    &r.out,
                    vec![
                        ("axis", Attr::Int(r.axis as i64)),
                        ("keepdims", Attr::Int(1)),
                    ],
                );
            }
            N::Greater(b) => self.binary("Greater", b),
            N::GreaterElem(s) => self.with_scalar("Greater", s)?,
            N::GreaterEqual(b) => self.binary("GreaterOrEqual", b),
            N::GreaterEqualElem(s) => self.with_scalar("GreaterOrEqual", s)?,
            N::Lower(b) => self.binary("Less", b),
            N::LowerElem(s) => self.with_scalar("Less", s)?,
            N::LowerEqual(b) => self.binary("LessOrEqual", b),
            N::LowerEqualElem(s) => self.with_scalar("LessOrEqual", s)?,
            N::Clamp(c) => {
                let x = self.arg(&c.tensor);
                let min = Arg::Data(scalar(&c.min, c.tensor.dtype)?);
                let max = Arg::Data(scalar(&c.max, c.tensor.dtype)?);
                self.node("Clip", vec![x, min, max], &c.out);
            }
            N::ClampMin(s) => self.with_scalar("Max", s)?,
            N::ClampMax(s) => self.with_scalar("Min", s)?,
            N::Powi(b) => self.binary("Pow", b),
            N::PowiScalar(s) => self.with_scalar("Pow", s)?,
            N::CumSum(d) => {
                let x = self.arg(&d.input);
                let axis = Arg::Data(Values {
                    dims: Vec::new(),
                    data: ValueData::I64(vec![d.axis as i64]),
                });
                self.node("CumSum", vec![x, axis], &d.out);
            }
            N::Pad(p) => {
                let value = match &p.mode {
                    burn_ir::PadModeIr::Constant(value) => scalar(value, p.input.dtype)?,
                    _ => return Err(self.unsupported("padding other than by a constant")),
                };
                let begins = p.padding.iter().map(|(b, _)| *b as i64);
                let ends = p.padding.iter().map(|(_, e)| *e as i64);
                let pads: Vec<i64> = begins.chain(ends).collect();
                let x = self.arg(&p.input);
                self.node(
                    "Pad",
                    vec![x, Arg::Data(int_vector(pads)), Arg::Data(value)],
                    &p.out,
                );
            }
            other => return Err(self.unsupported_op(other)),
        }
        Ok(())
    }

    fn float(&mut self, op: &FloatOperationIr) -> Result<(), OnnxError> {
        use FloatOperationIr as F;
        match op {
            F::Exp(u) => self.unary("Exp", u),
            F::Log(u) => self.unary("Log", u),
            F::Log1p(u) => {
                let x = self.arg(&u.input);
                let one = Arg::Data(scalar(&ScalarIr::Float(1.0), u.input.dtype)?);
                let sum = self.fresh();
                self.push("Add", vec![x, one], sum.clone(), Vec::new());
                self.node("Log", vec![Arg::Name(sum)], &u.out);
            }
            F::Erf(u) => self.unary("Erf", u),
            F::PowfScalar(s) => self.with_scalar("Pow", s)?,
            F::Powf(b) => self.binary("Pow", b),
            F::Sqrt(u) => self.unary("Sqrt", u),
            F::Cos(u) => self.unary("Cos", u),
            F::Sin(u) => self.unary("Sin", u),
            F::Tanh(u) => self.unary("Tanh", u),
            F::Round(u) => self.unary("Round", u),
            F::Floor(u) => self.unary("Floor", u),
            F::Ceil(u) => self.unary("Ceil", u),
            F::Recip(u) => self.unary("Reciprocal", u),
            F::IsNan(u) => self.unary("IsNaN", u),
            F::IsInf(u) => self.unary("IsInf", u),
            F::IntoInt(c) => {
                let input = self.arg(&c.input);
                self.cast(input, &c.out)?;
            }
            F::Matmul(m) => {
                let (lhs, rhs) = (self.arg(&m.lhs), self.arg(&m.rhs));
                self.node("MatMul", vec![lhs, rhs], &m.out);
            }
            F::Random(_) => {
                return Err(self.unsupported("random numbers (dropout left on while exporting?)"));
            }
            other => return Err(self.unsupported_op(other)),
        }
        Ok(())
    }

    fn activation(&mut self, op: &ActivationOperationIr) -> Result<(), OnnxError> {
        use ActivationOperationIr as A;
        match op {
            A::Relu(u) => self.unary("Relu", u),
            A::Sigmoid(u) => self.unary("Sigmoid", u),
            A::Gelu(u) => {
                // The exact GELU, 0.5·x·(1 + erf(x/√2)): opset 17 has no Gelu node.
                let x = self.arg(&u.input);
                let f = |v: f64| scalar(&ScalarIr::Float(v), u.input.dtype).map(Arg::Data);
                let (half, one, root) = (f(0.5), f(1.0), f(std::f64::consts::FRAC_1_SQRT_2));
                let (half, one, root) = (half?, one?, root?);
                let scaled = self.fresh();
                self.push("Mul", vec![x.clone(), root], scaled.clone(), Vec::new());
                let erf = self.fresh();
                self.push("Erf", vec![Arg::Name(scaled)], erf.clone(), Vec::new());
                let shifted = self.fresh();
                self.push(
                    "Add",
                    vec![Arg::Name(erf), one],
                    shifted.clone(),
                    Vec::new(),
                );
                let halved = self.fresh();
                self.push("Mul", vec![x, half], halved.clone(), Vec::new());
                self.node("Mul", vec![Arg::Name(halved), Arg::Name(shifted)], &u.out);
            }
            A::LeakyRelu(s) => {
                let x = self.arg(&s.lhs);
                let alpha = match s.rhs {
                    ScalarIr::Float(a) => a as f32,
                    ScalarIr::Int(a) => a as f32,
                    ScalarIr::UInt(a) => a as f32,
                    ScalarIr::Bool(_) => return Err(self.unsupported("a boolean slope")),
                };
                self.node_with(
                    "LeakyRelu",
                    vec![x],
                    &s.out,
                    vec![("alpha", Attr::Float(alpha))],
                );
            }
            A::PRelu(b) => self.binary("PRelu", b),
            A::HardSigmoid(h) => {
                let x = self.arg(&h.tensor);
                let value = |s: &ScalarIr| match *s {
                    ScalarIr::Float(v) => v as f32,
                    ScalarIr::Int(v) => v as f32,
                    ScalarIr::UInt(v) => v as f32,
                    ScalarIr::Bool(v) => f32::from(u8::from(v)),
                };
                self.node_with(
                    "HardSigmoid",
                    vec![x],
                    &h.out,
                    vec![
                        ("alpha", Attr::Float(value(&h.alpha))),
                        ("beta", Attr::Float(value(&h.beta))),
                    ],
                );
            }
            A::Softmax(d) | A::LogSoftmax(d) => {
                let op = if matches!(op, A::Softmax(_)) {
                    "Softmax"
                } else {
                    "LogSoftmax"
                };
                let x = self.arg(&d.input);
                self.node_with(
                    op,
                    vec![x],
                    &d.out,
                    vec![("axis", Attr::Int(d.axis as i64))],
                );
            }
            other => return Err(self.unsupported_op(other)),
        }
        Ok(())
    }

    fn module(&mut self, op: &ModuleOperationIr) -> Result<(), OnnxError> {
        use ModuleOperationIr as M;
        match op {
            M::Linear(l) => {
                let (x, weight) = (self.arg(&l.x), self.arg(&l.weight));
                let d_in = *l.x.shape.iter().last().unwrap_or(&0);
                let weight = if l.weight.shape[0] == d_in {
                    weight
                } else {
                    let transposed = self.fresh();
                    self.push(
                        "Transpose",
                        vec![weight],
                        transposed.clone(),
                        vec![("perm", Attr::Ints(vec![1, 0]))],
                    );
                    Arg::Name(transposed)
                };
                match &l.bias {
                    None => self.node("MatMul", vec![x, weight], &l.out),
                    Some(bias) => {
                        let product = self.fresh();
                        self.push("MatMul", vec![x, weight], product.clone(), Vec::new());
                        let bias = self.arg(bias);
                        self.node("Add", vec![Arg::Name(product), bias], &l.out);
                    }
                }
            }
            M::Embedding(e) => {
                let (weights, indices) = (self.arg(&e.weights), self.arg(&e.indices));
                self.node_with(
                    "Gather",
                    vec![weights, indices],
                    &e.out,
                    vec![("axis", Attr::Int(0))],
                );
            }
            M::LayerNorm(l) => {
                let x = self.arg(&l.input);
                let gamma = self.arg(&l.gamma);
                // A norm without a bias gets zeros rather than no input: onnxruntime's
                // SkipLayerNormFusion (1.23) crashes on a LayerNormalization without its bias.
                let beta = match &l.beta {
                    Some(beta) => self.arg(beta),
                    None => {
                        let width = l.gamma.shape.num_elements();
                        let zeros = match elem_type(l.gamma.dtype)? {
                            crate::proto::data_type::FLOAT => ValueData::F32(vec![0.0; width]),
                            _ => return Err(self.unsupported("a layer norm of integers")),
                        };
                        Arg::Data(Values {
                            dims: l.gamma.shape.to_vec(),
                            data: zeros,
                        })
                    }
                };
                let epsilon = scalar_f32(&l.epsilon);
                self.node_with(
                    "LayerNormalization",
                    vec![x, gamma, beta],
                    &l.out,
                    vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(epsilon))],
                );
            }
            M::BatchNorm(b) => {
                let inputs = [&b.x, &b.gamma, &b.beta, &b.mean, &b.variance]
                    .into_iter()
                    .map(|t| self.arg(t))
                    .collect();
                self.node_with(
                    "BatchNormalization",
                    inputs,
                    &b.out,
                    vec![("epsilon", Attr::Float(scalar_f32(&b.epsilon)))],
                );
            }
            M::Conv2d(c) => {
                let mut inputs = vec![self.arg(&c.x), self.arg(&c.weight)];
                if let Some(bias) = &c.bias {
                    inputs.push(self.arg(bias));
                }
                let o = &c.options;
                let pads = vec![
                    o.padding[0].0 as i64,
                    o.padding[1].0 as i64,
                    o.padding[0].1 as i64,
                    o.padding[1].1 as i64,
                ];
                self.node_with(
                    "Conv",
                    inputs,
                    &c.out,
                    vec![
                        ("kernel_shape", Attr::Ints(dims(&c.weight)[2..].to_vec())),
                        ("strides", Attr::Ints(ints(o.stride))),
                        ("pads", Attr::Ints(pads)),
                        ("dilations", Attr::Ints(ints(o.dilation))),
                        ("group", Attr::Int(o.groups as i64)),
                    ],
                );
            }
            M::Conv1d(c) => {
                let mut inputs = vec![self.arg(&c.x), self.arg(&c.weight)];
                if let Some(bias) = &c.bias {
                    inputs.push(self.arg(bias));
                }
                let o = &c.options;
                self.node_with(
                    "Conv",
                    inputs,
                    &c.out,
                    vec![
                        ("kernel_shape", Attr::Ints(dims(&c.weight)[2..].to_vec())),
                        ("strides", Attr::Ints(ints(o.stride))),
                        (
                            "pads",
                            Attr::Ints(vec![o.padding[0].0 as i64, o.padding[0].1 as i64]),
                        ),
                        ("dilations", Attr::Ints(ints(o.dilation))),
                        ("group", Attr::Int(o.groups as i64)),
                    ],
                );
            }
            M::AvgPool2d(p) => {
                let x = self.arg(&p.x);
                let pads = symmetric_pads(p.padding);
                self.node_with(
                    "AveragePool",
                    vec![x],
                    &p.out,
                    vec![
                        ("kernel_shape", Attr::Ints(ints(p.kernel_size))),
                        ("strides", Attr::Ints(ints(p.stride))),
                        ("pads", Attr::Ints(pads)),
                        (
                            "count_include_pad",
                            Attr::Int(i64::from(p.count_include_pad)),
                        ),
                        ("ceil_mode", Attr::Int(i64::from(p.ceil_mode))),
                    ],
                );
            }
            M::MaxPool2d(p) => {
                let x = self.arg(&p.x);
                let pads = symmetric_pads(p.padding);
                self.node_with(
                    "MaxPool",
                    vec![x],
                    &p.out,
                    vec![
                        ("kernel_shape", Attr::Ints(ints(p.kernel_size))),
                        ("strides", Attr::Ints(ints(p.stride))),
                        ("pads", Attr::Ints(pads)),
                        ("dilations", Attr::Ints(ints(p.dilation))),
                        ("ceil_mode", Attr::Int(i64::from(p.ceil_mode))),
                    ],
                );
            }
            M::AdaptiveAvgPool2d(p) => {
                let x = self.arg(&p.x);
                let (h, w) = (p.x.shape[2], p.x.shape[3]);
                let [oh, ow] = p.output_size;
                if [oh, ow] == [1, 1] {
                    self.node("GlobalAveragePool", vec![x], &p.out);
                } else if h % oh == 0 && w % ow == 0 {
                    let kernel = vec![(h / oh) as i64, (w / ow) as i64];
                    self.node_with(
                        "AveragePool",
                        vec![x],
                        &p.out,
                        vec![
                            ("kernel_shape", Attr::Ints(kernel.clone())),
                            ("strides", Attr::Ints(kernel)),
                        ],
                    );
                } else {
                    return Err(self.unsupported(
                        "adaptive average pooling to a size that does not divide the input",
                    ));
                }
            }
            M::Attention(a) => self.attention(a)?,
            other => return Err(self.unsupported_op(other)),
        }
        Ok(())
    }

    /// burn's attention as its reference computes it: softmax(q·kᵀ·scale, masked, + bias)·v.
    fn attention(&mut self, a: &burn_ir::AttentionOpIr) -> Result<(), OnnxError> {
        let dtype = a.query.dtype;
        let head_dim = *a.query.shape.iter().last().unwrap_or(&1);
        let scale = match &a.options.scale {
            Some(s) => scalar_f32(s) as f64,
            None => 1.0 / (head_dim as f64).sqrt(),
        };
        if a.options.softcap.is_some() || a.options.is_causal {
            return Err(self.unsupported("causal or soft-capped attention"));
        }
        let (q, k, v) = (self.arg(&a.query), self.arg(&a.key), self.arg(&a.value));
        let kt = self.fresh();
        self.push(
            "Transpose",
            vec![k],
            kt.clone(),
            vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))],
        );
        let qk = self.fresh();
        self.push("MatMul", vec![q, Arg::Name(kt)], qk.clone(), Vec::new());
        let mut scores = self.fresh();
        let scale = Arg::Data(scalar(&ScalarIr::Float(scale), dtype)?);
        self.push(
            "Mul",
            vec![Arg::Name(qk), scale],
            scores.clone(),
            Vec::new(),
        );
        if let Some(mask) = &a.mask {
            let mask = self.arg(mask);
            // The lowest float rather than -inf, as transformers masks: a row whose keys are all
            // masked (a padding query under a local window) softmaxes to finite weights, not
            // NaN, and every other row is the same.
            let minus_inf = Arg::Data(scalar(&ScalarIr::Float(f32::MIN.into()), dtype)?);
            let masked = self.fresh();
            self.push(
                "Where",
                vec![mask, minus_inf, Arg::Name(scores)],
                masked.clone(),
                Vec::new(),
            );
            scores = masked;
        }
        if let Some(bias) = &a.attn_bias {
            let bias = self.arg(bias);
            let biased = self.fresh();
            self.push(
                "Add",
                vec![Arg::Name(scores), bias],
                biased.clone(),
                Vec::new(),
            );
            scores = biased;
        }
        let weights = self.fresh();
        self.push(
            "Softmax",
            vec![Arg::Name(scores)],
            weights.clone(),
            vec![("axis", Attr::Int(-1))],
        );
        self.node("MatMul", vec![Arg::Name(weights), v], &a.out);
        Ok(())
    }
}

/// ONNX's `pads` (all begins, then all ends) of a pool padded alike on both sides.
fn symmetric_pads(padding: [usize; 2]) -> Vec<i64> {
    let pads = ints(padding);
    pads.iter().chain(&pads).copied().collect()
}

fn scalar_f32(value: &ScalarIr) -> f32 {
    match *value {
        ScalarIr::Float(v) => v as f32,
        ScalarIr::Int(v) => v as f32,
        ScalarIr::UInt(v) => v as f32,
        ScalarIr::Bool(v) => f32::from(u8::from(v)),
    }
}

fn int_vector(values: Vec<i64>) -> Values {
    Values {
        dims: vec![values.len()],
        data: ValueData::I64(values),
    }
}

impl Values {
    pub fn len(&self) -> usize {
        self.data.len()
    }
}

/// `steps` with every constant that equals `first`'s at the same place replaced by
/// [`Arg::SameAsFirst`].
pub fn share_constants(first: &[Step], mut steps: Vec<Step>) -> Vec<Step> {
    for (step, first) in steps.iter_mut().zip(first) {
        for (arg, first) in step.inputs.iter_mut().zip(&first.inputs) {
            if matches!(arg, Arg::Data(_)) && arg == first {
                *arg = Arg::SameAsFirst;
            }
        }
    }
    steps
}
