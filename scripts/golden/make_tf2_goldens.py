#!/usr/bin/env python3
"""Make TF2 object-based checkpoints and a SavedModel of a tiny Keras model, with goldens.

Purpose: graft reads TF2 object-based checkpoints and SavedModels' `variables/` in Rust. Their
tensors are keyed by object path (`optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE`,
`model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE`, `_layers/1/_kernel/...`) and
are resolved to variable names through the bundle's object graph: the DT_STRING scalar
`_CHECKPOINTABLE_OBJECT_GRAPH`, a serialized `TrackableObjectGraph` proto. This script writes
such bundles, saved by real TensorFlow, and the names and values a reader must recover.

The model, in every variant: Sequential([Input((3,)), Dense(4, name="dense"),
LayerNormalization(name="norm"), Dense(2, name="head")]), its weights set from seeded numpy
values, then trained one step with Adam (learning rate 0.01, mean squared error on a fixed
batch) so that the checkpoints also hold optimizer variables, which a reader must skip or label.

From the repo root (TF_PY is a Python with tensorflow-cpu 2.21.0, whose `tf.keras` is Keras 3,
and tf-keras 2.21.0, the legacy Keras 2, installed with `pip install --no-deps tf-keras==2.21.0`
so that it does not pull in the `tensorflow` package beside `tensorflow-cpu`):

    TF_PY scripts/golden/make_tf2_goldens.py --golden crates/graft-model/tests/golden/tf2
    # Writes nothing; prints the object graphs, the proto field numbers and the layout of
    # the DT_STRING tensor in the data file, checked by a plain-Python decoder:
    TF_PY scripts/golden/make_tf2_goldens.py --facts --golden crates/graft-model/tests/golden/tf2

Versions used for the committed files: TensorFlow 2.21.0 (tensorflow-cpu), Keras 3.15.1
(`tf.keras`), tf-keras 2.21.0, numpy 2.4.6, protobuf 7.36.2, Python 3.11, CPU, float32.

Files written under GOLDEN:
    checkpoint/ckpt.index, checkpoint/ckpt.data-00000-of-00001
        tf.train.Checkpoint(model=model, optimizer=opt).write(".../checkpoint/ckpt") of the
        Keras 3 model and its Keras 3 Adam. Keras 3 keeps its optimizer's variables as plain
        children (`optimizer/_variables/N`), not as slot variables, and the model's variables
        are saved under `optimizer/_trainable_variables/N`, their shortest object path: no key
        names a layer, only the object graph's `full_name` (`sequential/dense/kernel`) does.
    keras2_checkpoint/ckpt.index, keras2_checkpoint/ckpt.data-00000-of-00001
        The same with tf-keras (Keras 2) and its legacy Adam (`tf_keras.optimizers.legacy`):
        the layout of checkpoints from TF 2.0-2.10, whose default Adam this was. Keys are
        `model/layer_with_weights-N/...` (Keras 2, up to TF 2.15) and Adam's m/v are slot
        variables (`.../.OPTIMIZER_SLOT/optimizer/m/...`), which the object graph lists in the
        optimizer node's `slot_variables` and reaches by no child path.
    saved_model/saved_model.pb, saved_model/variables/variables.{index,data-00000-of-00001}
        tf.saved_model.save(model, ...) of the Keras 3 model after the same step (its
        fingerprint.pb and empty assets/ are removed).
    goldens.json
        For each bundle: every tensor as tf.train.list_variables gives it (key, shape, dtype);
        for each model variable its checkpoint key, the object graph's full_name, its node and
        object paths, its Keras path (`var.path` in Keras 3; tf-keras has no `.path`, so there
        `var.name` without ":0") and name, shape and values (row-major, flattened); for each
        other variable its key, full_name, node and object paths, and for a slot variable the
        variable it belongs to and its slot name. Also the model's outputs on 2 fixed inputs.
"""
import argparse
import json
import os
import re
import shutil
import struct
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tf_bert_goldens import crc32c, crc_mask, proto_fields, varint  # noqa: E402  (the .index helpers)

SEED = 20240612
LEARNING_RATE = 0.01
INPUTS = [[0.5, -1.0, 2.0], [-1.5, 0.25, 0.75]]
TRAIN_X = [[1.0, 2.0, -1.0], [0.0, -0.5, 0.5], [2.0, 1.0, 0.0], [-1.0, 0.0, 1.0]]
TRAIN_Y = [[1.0, 0.0], [0.0, 1.0], [0.5, -0.5], [-1.0, 1.0]]
GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def seeded_weights():
    """The initial weights, in Keras' weight order: kernel, bias, gamma, beta, kernel, bias."""
    rng = np.random.default_rng(SEED)

    def r(*shape, scale=0.5, offset=0.0):
        return (offset + scale * rng.standard_normal(shape)).astype(np.float32)

    return [r(3, 4), r(4, scale=0.1), r(4, scale=0.1, offset=1.0), r(4, scale=0.1),
            r(4, 2), r(2, scale=0.1)]


def build(keras):
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(4, name="dense"),
        keras.layers.LayerNormalization(name="norm"),
        keras.layers.Dense(2, name="head"),
    ])
    model.set_weights(seeded_weights())
    return model


def train_step(tf, model, opt):
    x = tf.constant(TRAIN_X, tf.float32)
    y = tf.constant(TRAIN_Y, tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x) - y))
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
    return float(loss)


def read_graph(tf, prefix):
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    raw = tf.train.load_checkpoint(prefix).get_tensor(GRAPH_KEY)
    return trackable_object_graph_pb2.TrackableObjectGraph.FromString(raw)


def node_paths(graph):
    """Every object path from the root (node 0) to each node, shortest first."""
    paths = {0: [""]}
    frontier = [0]
    while frontier:
        nxt = []
        for nid in frontier:
            for child in graph.nodes[nid].children:
                here = [f"{p}/{child.local_name}" if p else child.local_name for p in paths[nid]]
                if child.node_id not in paths:
                    paths[child.node_id] = []
                    nxt.append(child.node_id)
                seen = paths[child.node_id]
                seen += [p for p in here if p not in seen and len(seen) < 8]
        frontier = nxt
    return paths


def describe_bundle(tf, prefix, model, model_vars, var_name, trackables=None, extra=None):
    """The goldens of one bundle. `trackables`, where given, lists the saved objects in node id
    order (TensorFlow's breadth-first traversal), to find each model variable's node by
    identity; otherwise it is found by its full_name and checked by value."""
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    tensors = [{"key": k, "shape": list(s), "dtype": dtypes[k].name}
               for k, s in tf.train.list_variables(prefix)]
    graph = read_graph(tf, prefix)
    paths = node_paths(graph)
    attr_nodes = {}
    for nid, node in enumerate(graph.nodes):
        for a in node.attributes:
            attr_nodes[a.checkpoint_key] = (nid, a)
    slot_of = {}
    for nid, node in enumerate(graph.nodes):
        for s in node.slot_variables:
            slot_of[s.slot_variable_node_id] = (s.original_variable_node_id, s.slot_name)
    out_vars, model_nodes = [], set()
    for v in model_vars:
        nid = None
        if trackables is not None:
            for i, obj in enumerate(trackables):
                if obj is v or obj is getattr(v, "value", None) or obj is getattr(v, "_value", None):
                    nid = i
                    break
        if nid is None:
            matches = [n for n, a in attr_nodes.values() if a.full_name == var_name(v)]
            assert len(matches) == 1, (var_name(v), matches)
            nid = matches[0]
        (attr,) = graph.nodes[nid].attributes
        values = np.asarray(v.numpy(), np.float32)
        saved = reader.get_tensor(attr.checkpoint_key)
        assert np.array_equal(saved, values), attr.checkpoint_key
        model_nodes.add(nid)
        out_vars.append({
            "keras_path": getattr(v, "path", None) or v.name.split(":")[0],
            "keras_name": v.name,
            "checkpoint_key": attr.checkpoint_key,
            "full_name": attr.full_name,
            "node_id": nid,
            "object_paths": paths.get(nid, []),
            "shape": list(values.shape),
            "dtype": "float32",
            "values": [float(x) for x in values.reshape(-1)],
        })
    others = []
    for t in tensors:
        if t["key"] == GRAPH_KEY:
            continue
        nid, a = attr_nodes[t["key"]]
        if nid in model_nodes:
            continue
        entry = {"key": t["key"], "full_name": a.full_name, "node_id": nid,
                 "object_paths": paths.get(nid, [])}
        if nid in slot_of:
            orig, slot = slot_of[nid]
            entry["slot_of_node"] = orig
            entry["slot_name"] = slot
            entry["slot_of"] = next(x["full_name"] for x in out_vars if x["node_id"] == orig)
        others.append(entry)
    assert len(model_vars) + len(others) + 1 == len(tensors)
    outputs = model(np.asarray(INPUTS, np.float32)).numpy()
    section = {
        "tensors": tensors,
        "object_graph_nodes": len(graph.nodes),
        "model_variables": out_vars,
        "other_variables": others,
        "outputs": outputs.tolist(),
    }
    section.update(extra or {})
    return section


def make(args):
    import tensorflow as tf
    from tensorflow.python.checkpoint import graph_view
    import keras

    try:
        import tf_keras
    except ImportError:
        sys.exit("tf_keras is needed for keras2_checkpoint/: pip install --no-deps tf-keras==2.21.0")
    golden = args.golden
    for sub in ("checkpoint", "keras2_checkpoint", "saved_model"):
        shutil.rmtree(os.path.join(golden, sub), ignore_errors=True)
    os.makedirs(golden, exist_ok=True)
    doc = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf_keras": tf_keras.__version__,
        "seed": SEED,
        "model": "Sequential([Input((3,)), Dense(4, name='dense'), LayerNormalization(name='norm')"
                 " (epsilon 1e-3, last axis), Dense(2, name='head')]), no activations",
        "training": f"one Adam step (learning rate {LEARNING_RATE}) on mean squared error; the "
                    "bundles hold the weights after it",
        "train_x": TRAIN_X,
        "train_y": TRAIN_Y,
        "initial_weights": [w.reshape(-1).tolist() for w in seeded_weights()],
        "inputs": INPUTS,
    }

    # Keras 3 (tf.keras in TensorFlow 2.21): checkpoint with optimizer, and SavedModel.
    model = build(tf.keras)
    opt = tf.keras.optimizers.Adam(LEARNING_RATE)
    loss3 = train_step(tf, model, opt)
    ckpt = tf.train.Checkpoint(model=model, optimizer=opt)
    prefix = ckpt.write(os.path.join(golden, "checkpoint", "ckpt"))
    trackables, _ = graph_view.ObjectGraphView(ckpt).breadth_first_traversal()
    doc["checkpoint"] = describe_bundle(
        tf, prefix, model, model.weights, lambda v: v.path, trackables,
        {"prefix": "checkpoint/ckpt", "keras": keras.__version__, "loss_before_step": loss3,
         "call": "tf.train.Checkpoint(model=model, optimizer=tf.keras.optimizers.Adam).write"})
    sm = os.path.join(golden, "saved_model")
    tf.saved_model.save(model, sm)
    for junk in ("fingerprint.pb",):
        if os.path.exists(os.path.join(sm, junk)):
            os.remove(os.path.join(sm, junk))
    if os.path.isdir(os.path.join(sm, "assets")) and not os.listdir(os.path.join(sm, "assets")):
        os.rmdir(os.path.join(sm, "assets"))
    doc["saved_model"] = describe_bundle(
        tf, os.path.join(sm, "variables", "variables"), model, model.weights, lambda v: v.path,
        None, {"prefix": "saved_model/variables/variables", "keras": keras.__version__,
               "call": "tf.saved_model.save(model, ...)"})

    # Keras 2 (tf-keras) with the legacy Adam: slot variables.
    model2 = build(tf_keras)
    opt2 = tf_keras.optimizers.legacy.Adam(LEARNING_RATE)
    loss2 = train_step(tf, model2, opt2)
    ckpt2 = tf.train.Checkpoint(model=model2, optimizer=opt2)
    prefix2 = ckpt2.write(os.path.join(golden, "keras2_checkpoint", "ckpt"))
    trackables2, _ = graph_view.ObjectGraphView(ckpt2).breadth_first_traversal()
    doc["keras2_checkpoint"] = describe_bundle(
        tf, prefix2, model2, model2.weights, lambda v: v.name.split(":")[0], trackables2,
        {"prefix": "keras2_checkpoint/ckpt", "keras": "tf_keras " + tf_keras.__version__,
         "loss_before_step": loss2,
         "call": "tf.train.Checkpoint(model=model, optimizer=tf_keras.optimizers.legacy.Adam)"
                 ".write"})

    text = json.dumps(doc, indent=1)
    # Lists of numbers on one line each.
    text = re.sub(r"\[[-0-9.e,\s]*\]", lambda m: " ".join(m.group(0).split()), text)
    with open(os.path.join(golden, "goldens.json"), "w") as f:
        f.write(text + "\n")
    total = 0
    for root, _, files in os.walk(golden):
        for name in sorted(files):
            path = os.path.join(root, name)
            total += os.path.getsize(path)
            print(f"{os.path.getsize(path):8d}  {os.path.relpath(path, golden)}")
    print(f"{total:8d}  in all")


# --------------------------------------------------------------------------------------------
# --facts: decode the bundles by hand and print what a reader needs to know.
# --------------------------------------------------------------------------------------------
def read_block(buf, offset, size):
    contents = buf[offset:offset + size]
    assert buf[offset + size] == 0, "compressed block"
    stored = struct.unpack_from("<I", buf, offset + size + 1)[0]
    assert stored == crc_mask(crc32c(buf[offset:offset + size + 1])), "block crc"
    num_restarts = struct.unpack_from("<I", contents, len(contents) - 4)[0]
    limit = len(contents) - 4 - 4 * num_restarts
    entries, pos, key = [], 0, b""
    while pos < limit:
        shared, pos = varint(contents, pos)
        non_shared, pos = varint(contents, pos)
        vlen, pos = varint(contents, pos)
        key = key[:shared] + bytes(contents[pos:pos + non_shared])
        pos += non_shared
        entries.append((key, bytes(contents[pos:pos + vlen])))
        pos += vlen
    return entries


def index_entries(path):
    """The (key, value) pairs of a tensor bundle's .index table, in order."""
    idx = open(path, "rb").read()
    footer = idx[-48:]
    _, p = varint(footer, 0)
    _, p = varint(footer, p)
    io_, p = varint(footer, p)
    is_, _ = varint(footer, p)
    out = []
    for _, handle in read_block(idx, io_, is_):
        off, q = varint(handle, 0)
        size, _ = varint(handle, q)
        out += read_block(idx, off, size)
    return out


def decode_string_tensor(raw, count):
    """Plain-Python decode of a DT_STRING tensor's bytes in a bundle's data file:
    `count` varint64 lengths, a 4-byte little-endian masked crc32c of the lengths, then the
    strings' bytes back to back. The lengths are checksummed as little-endian uint32 (uint64
    only for a string over 4 GiB), not as their varint bytes. The entry's crc32c is the masked
    crc32c of: those uint32 lengths, the 4 masked-crc bytes as stored, the strings' bytes.
    Returns the strings, the checksum the entry must hold, and where the lengths end."""
    pos, lengths = 0, []
    for _ in range(count):
        n, pos = varint(raw, pos)
        lengths.append(n)
    lengths_end = pos
    as_ints = b"".join(struct.pack("<I" if n <= 0xFFFFFFFF else "<Q", n) for n in lengths)
    stored_len_crc = struct.unpack_from("<I", raw, pos)[0]
    assert stored_len_crc == crc_mask(crc32c(as_ints)), "length checksum"
    pos += 4
    strings = []
    for n in lengths:
        strings.append(bytes(raw[pos:pos + n]))
        pos += n
    assert pos == len(raw), (pos, len(raw))
    entry_crc = crc_mask(crc32c(b"".join(strings), crc32c(as_ints + raw[lengths_end:lengths_end + 4])))
    return strings, entry_crc, lengths_end


def _contiguous(spans):
    pos = 0
    for offset, size in spans:
        if offset != pos:
            return False
        pos = offset + size
    return True


def print_fields(pb2):
    print("== Proto field numbers (tensorflow/core/protobuf/trackable_object_graph.proto) ==")

    def walk(desc, indent=""):
        print(f"{indent}message {desc.full_name}")
        for f in desc.fields:
            kind = f.message_type.full_name if f.message_type else \
                {1: "double", 3: "int64", 5: "int32", 8: "bool", 9: "string", 12: "bytes",
                 13: "uint32"}.get(f.type, f"type{f.type}")
            repeated = f.is_repeated if hasattr(f, "is_repeated") else f.label == 3
            label = "repeated " if repeated else ""
            print(f"{indent}  {f.number:2d}  {f.name}: {label}{kind}")
        for nested in desc.nested_types:
            walk(nested, indent + "  ")

    walk(pb2.TrackableObjectGraph.DESCRIPTOR)


def dump_graph(graph, paths):
    for nid, node in enumerate(graph.nodes):
        kids = ", ".join(f"{c.local_name}->{c.node_id}" for c in node.children)
        line = f"  node {nid:2d}"
        if paths.get(nid):
            line += f"  [{paths[nid][0] or '<root>'}]"
        print(line + (f"  children: {kids}" if kids else ""))
        for a in node.attributes:
            print(f"           attr name={a.name!r} full_name={a.full_name!r} "
                  f"checkpoint_key={a.checkpoint_key!r}")
        for s in node.slot_variables:
            print(f"           slot original_variable_node_id={s.original_variable_node_id} "
                  f"slot_name={s.slot_name!r} slot_variable_node_id={s.slot_variable_node_id}")
        if node.HasField("has_checkpoint_values"):
            print(f"           has_checkpoint_values={node.has_checkpoint_values.value}")
        if node.HasField("registered_saver"):
            print(f"           registered_saver={node.registered_saver}")


def bundle_facts(tf, name, prefix, pb2, bundle_pb2):
    print(f"\n== {name}: {prefix}.index ==")
    entries = index_entries(prefix + ".index")
    data = open(prefix + ".data-00000-of-00001", "rb").read()
    keys = [k.decode() for k, _ in entries]
    print(f"keys in the index ({len(keys) - 1} tensors after the header key ''):")
    for k, v in entries[1:]:
        e = bundle_pb2.BundleEntryProto.FromString(v)
        shape = [d.size for d in e.shape.dim]
        print(f"  {k.decode():75s} dtype={e.dtype} shape={shape} offset={e.offset} size={e.size}")
    order = sorted((bundle_pb2.BundleEntryProto.FromString(v).offset, k.decode())
                   for k, v in entries[1:])
    print("data file order (by offset):", [k for _, k in order])
    parsed = [bundle_pb2.BundleEntryProto.FromString(v) for _, v in entries[1:]]
    print(f"data file: {len(data)} bytes; tensors end at {max(e.offset + e.size for e in parsed)}; "
          f"back to back (no padding): {_contiguous(sorted((e.offset, e.size) for e in parsed))}")
    val = dict(entries)[GRAPH_KEY.encode()]
    e = bundle_pb2.BundleEntryProto.FromString(val)
    print(f"\n{GRAPH_KEY} entry (BundleEntryProto {val.hex(' ')}):")
    print("  raw fields:", proto_fields(val))
    print("  parsed:", str(e).replace("\n", " | "))
    raw = data[e.offset:e.offset + e.size]
    (blob,), want_crc, lengths_end = decode_string_tensor(raw, 1)
    as_u32 = struct.pack("<I", len(blob))
    print(f"  data[{e.offset}:{e.offset + e.size}] ({e.size} bytes):")
    print(f"    varint64 length: {raw[:lengths_end].hex(' ')} = {len(blob)}")
    print(f"    4-byte masked crc32c: {raw[lengths_end:lengths_end + 4].hex(' ')} = "
          f"{struct.unpack_from('<I', raw, lengths_end)[0]:#010x}; "
          f"crc32c(u32 LE length {as_u32.hex(' ')}) = {crc32c(as_u32):#010x}, "
          f"Mask() = {crc_mask(crc32c(as_u32)):#010x}; "
          f"Mask(crc32c(u64 LE length)) = {crc_mask(crc32c(struct.pack('<Q', len(blob)))):#010x}")
    print(f"    string bytes: {len(blob)} bytes, first 24: {blob[:24].hex(' ')}")
    print(f"    size == varint length + 4 + string length: "
          f"{e.size == lengths_end + 4 + len(blob)}")
    print(f"  entry crc32c {e.crc32c:#010x}; Mask(crc32c(u32 LE lengths ++ 4 masked-crc bytes ++ "
          f"string bytes)) = {want_crc:#010x}: {e.crc32c == want_crc}")
    print(f"  Mask(crc32c(data[offset:offset+size])) = {crc_mask(crc32c(raw)):#010x}: "
          f"{e.crc32c == crc_mask(crc32c(raw))} (the raw-bytes check of numeric tensors does not "
          f"hold for strings)")
    expected = tf.train.load_checkpoint(prefix).get_tensor(GRAPH_KEY)
    print(f"  plain-Python decode == TensorFlow's reader's bytes: {blob == expected}")
    for k, v in entries[1:]:
        en = bundle_pb2.BundleEntryProto.FromString(v)
        if en.dtype != 7:
            assert en.crc32c == crc_mask(crc32c(data[en.offset:en.offset + en.size])), k
    print("  every numeric entry: crc32c == Mask(crc32c(data[offset:offset+size])): True")
    graph = pb2.TrackableObjectGraph.FromString(blob)
    print(f"\nObject graph: {len(graph.nodes)} nodes; raw wire fields of node 0 and of the first "
          f"node with an attribute:")
    top = proto_fields(blob)
    print(f"  TrackableObjectGraph: {len(top)} fields, numbers {sorted({f for f, _, _ in top})}")
    print("  node 0:", proto_fields(top[0][2]))
    for f, _, v in top:
        inner = proto_fields(v)
        att = [x for x in inner if x[0] == 2]
        if att:
            print("  node with attribute:", inner)
            print("    its SerializedTensor:", proto_fields(att[0][2]))
            break
    for f, _, v in top:
        slots = [x for x in proto_fields(v) if x[0] == 3]
        if slots:
            print("  a SlotVariableReference:", proto_fields(slots[0][2]))
            break
    print("\nGraph dump (node, its shortest path, children local_name->node_id, attributes):")
    dump_graph(graph, node_paths(graph))


def facts(args):
    import tensorflow as tf
    from tensorflow.core.protobuf import tensor_bundle_pb2
    from tensorflow.core.protobuf import trackable_object_graph_pb2 as pb2

    print(f"TensorFlow {tf.__version__}")
    print_fields(pb2)
    g = args.golden
    bundle_facts(tf, "Keras 3 checkpoint", os.path.join(g, "checkpoint", "ckpt"), pb2,
                 tensor_bundle_pb2)
    bundle_facts(tf, "Keras 2 (tf-keras, legacy Adam) checkpoint",
                 os.path.join(g, "keras2_checkpoint", "ckpt"), pb2, tensor_bundle_pb2)
    bundle_facts(tf, "SavedModel variables", os.path.join(g, "saved_model", "variables",
                                                          "variables"), pb2, tensor_bundle_pb2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--golden", required=True, help="crates/graft-model/tests/golden/tf2")
    ap.add_argument("--facts", action="store_true", help="print the decoded facts, write nothing")
    args = ap.parse_args()
    (facts if args.facts else make)(args)


if __name__ == "__main__":
    main()
