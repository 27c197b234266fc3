"""The authors' TensorFlow U-GAT-IT generator (taki0112/UGATIT: UGATIT.py, ops.py), rebuilt for tests.

TensorFlow 2 has no `tf.contrib` and its Keras no longer backs `tf.compat.v1.layers`,
so each op is written out with `tf.compat.v1` variable scopes that give the
variables exactly the names and shapes TF 1.14 gave them (`tf.layers.conv2d`
-> `<scope>/conv2d/kernel|bias`, `tf.layers.dense` -> `<scope>/dense/...`,
`tf_contrib.layers.instance_norm` -> `<scope>/beta|gamma`). Every variable starts
random (biases, norms' gamma/beta and rho included), so a wrong mapping shows.
The graph is the authors' test graph: batch 1, NHWC, in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1


def _var(name: str, shape: list[int], kind: str = "weight") -> tf.Variable:
    init = {"weight": v1.random_normal_initializer(0.0, 0.05), "bias": v1.random_normal_initializer(0.0, 0.1),
            "gamma": v1.random_normal_initializer(1.0, 0.1), "rho": v1.random_uniform_initializer(0.0, 1.0)}[kind]
    return v1.get_variable(name, shape, initializer=init)


def conv(x, channels, kernel=4, stride=2, pad=0, pad_type="zero", use_bias=True, scope="conv_0"):
    with v1.variable_scope(scope):
        if pad > 0:
            if (kernel - stride) % 2 == 0:
                top = bottom = left = right = pad
            else:  # the authors' asymmetric padding: e.g. 3x3 stride 2 pads 1 before and 0 after
                top = left = pad
                bottom = right = kernel - stride - pad
            mode = "REFLECT" if pad_type == "reflect" else "CONSTANT"
            x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]], mode=mode)
        with v1.variable_scope("conv2d"):  # tf.layers.conv2d's own scope
            w = _var("kernel", [kernel, kernel, int(x.shape[-1]), channels])
            x = tf.nn.conv2d(x, w, strides=[1, stride, stride, 1], padding="VALID")
            if use_bias:
                x = tf.nn.bias_add(x, _var("bias", [channels], "bias"))
        return x


def _dense(x, units, use_bias=True):
    with v1.variable_scope("dense"):  # tf.layers.dense's own scope
        x = tf.matmul(x, _var("kernel", [int(x.shape[-1]), units]))
        return x + _var("bias", [units], "bias") if use_bias else x


def flatten(x):
    return tf.reshape(x, [int(x.shape[0]), -1])  # tf.layers.flatten: row-major NHWC


def fully_connected(x, units, use_bias=True, scope="linear"):
    with v1.variable_scope(scope):
        return _dense(flatten(x), units, use_bias)


def fully_connected_with_w(x, use_bias=True, reuse=False, scope="linear"):
    with v1.variable_scope(scope, reuse=reuse):
        x = flatten(x)
        channels = int(x.shape[-1])
        x = _dense(x, 1, use_bias)
        w = _var("kernel", [channels, 1])  # a variable of its own, not the dense layer's
        bias = _var("bias", [1], "bias")
        weights = tf.gather(tf.transpose(tf.nn.bias_add(w, bias)), 0)
        return x, weights


def instance_norm(x, scope="instance_norm"):
    with v1.variable_scope(scope):  # tf_contrib.layers.instance_norm(epsilon=1e-5, center, scale)
        ch = int(x.shape[-1])
        beta, gamma = _var("beta", [ch], "bias"), _var("gamma", [ch], "gamma")
        mean, var = tf.nn.moments(x, axes=[1, 2], keepdims=True)
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, 1e-5)


def _instance_layer_mix(x, rho):
    """rho * IN(x) + (1 - rho) * LN(x), with the biased moments and eps of both their norms."""
    eps = 1e-5
    ins_mean, ins_sigma = tf.nn.moments(x, axes=[1, 2], keepdims=True)
    x_ins = (x - ins_mean) / (tf.sqrt(ins_sigma + eps))
    ln_mean, ln_sigma = tf.nn.moments(x, axes=[1, 2, 3], keepdims=True)
    x_ln = (x - ln_mean) / (tf.sqrt(ln_sigma + eps))
    return rho * x_ins + (1 - rho) * x_ln


def adaptive_instance_layer_norm(x, gamma, beta, smoothing=True, scope="instance_layer_norm"):
    with v1.variable_scope(scope):
        rho = _var("rho", [int(x.shape[-1])], "rho")
        if smoothing:
            rho = tf.clip_by_value(rho - tf.constant(0.1), 0.0, 1.0)
        return _instance_layer_mix(x, rho) * gamma + beta


def layer_instance_norm(x, scope="layer_instance_norm"):
    with v1.variable_scope(scope):
        ch = int(x.shape[-1])
        rho = _var("rho", [ch], "rho")
        gamma, beta = _var("gamma", [ch], "gamma"), _var("beta", [ch], "bias")
        return _instance_layer_mix(x, rho) * gamma + beta


def resblock(x_init, channels, use_bias=True, scope="resblock_0"):
    with v1.variable_scope(scope):
        with v1.variable_scope("res1"):
            x = conv(x_init, channels, kernel=3, stride=1, pad=1, pad_type="reflect", use_bias=use_bias)
            x = tf.nn.relu(instance_norm(x))
        with v1.variable_scope("res2"):
            x = conv(x, channels, kernel=3, stride=1, pad=1, pad_type="reflect", use_bias=use_bias)
            x = instance_norm(x)
        return x + x_init


def adaptive_ins_layer_resblock(x_init, channels, gamma, beta, use_bias=True, smoothing=True, scope="adaptive_resblock"):
    with v1.variable_scope(scope):
        with v1.variable_scope("res1"):
            x = conv(x_init, channels, kernel=3, stride=1, pad=1, pad_type="reflect", use_bias=use_bias)
            x = tf.nn.relu(adaptive_instance_layer_norm(x, gamma, beta, smoothing))
        with v1.variable_scope("res2"):
            x = conv(x, channels, kernel=3, stride=1, pad=1, pad_type="reflect", use_bias=use_bias)
            x = adaptive_instance_layer_norm(x, gamma, beta, smoothing)
        return x + x_init


def up_sample(x, scale_factor=2):
    _, h, w, _ = x.get_shape().as_list()
    return v1.image.resize_nearest_neighbor(x, size=[h * scale_factor, w * scale_factor])


def mlp(x, ch, n_res, light, use_bias=True, scope="MLP"):
    channel = ch * n_res
    if light:
        x = tf.reduce_mean(x, axis=[1, 2])
    with v1.variable_scope(scope):
        for i in range(2):
            x = tf.nn.relu(fully_connected(x, channel, use_bias, scope="linear_" + str(i)))
        gamma = fully_connected(x, channel, use_bias, scope="gamma")
        beta = fully_connected(x, channel, use_bias, scope="beta")
        return tf.reshape(gamma, [1, 1, 1, channel]), tf.reshape(beta, [1, 1, 1, channel])


def generator(x_init, ch, n_res, light, smoothing, scope):
    """UGATIT.generator: the image and the CAM logits."""
    channel = ch
    with v1.variable_scope(scope):
        x = conv(x_init, channel, kernel=7, stride=1, pad=3, pad_type="reflect", scope="conv")
        x = tf.nn.relu(instance_norm(x, scope="ins_norm"))
        for i in range(2):
            x = conv(x, channel * 2, kernel=3, stride=2, pad=1, pad_type="reflect", scope="conv_" + str(i))
            x = tf.nn.relu(instance_norm(x, scope="ins_norm_" + str(i)))
            channel = channel * 2
        for i in range(n_res):
            x = resblock(x, channel, scope="resblock_" + str(i))

        cam_gap_logit, cam_x_weight = fully_connected_with_w(tf.reduce_mean(x, axis=[1, 2]), scope="CAM_logit")
        x_gap = tf.multiply(x, cam_x_weight)
        cam_gmp_logit, cam_x_weight = fully_connected_with_w(tf.reduce_max(x, axis=[1, 2]), reuse=True, scope="CAM_logit")
        x_gmp = tf.multiply(x, cam_x_weight)
        cam_logit = tf.concat([cam_gap_logit, cam_gmp_logit], axis=-1)
        x = tf.concat([x_gap, x_gmp], axis=-1)
        x = tf.nn.relu(conv(x, channel, kernel=1, stride=1, scope="conv_1x1"))

        gamma, beta = mlp(x, ch, n_res, light)
        for i in range(n_res):
            x = adaptive_ins_layer_resblock(x, channel, gamma, beta, smoothing=smoothing, scope="adaptive_resblock" + str(i))
        for i in range(2):
            x = up_sample(x, scale_factor=2)
            x = conv(x, channel // 2, kernel=3, stride=1, pad=1, pad_type="reflect", scope="up_conv_" + str(i))
            x = tf.nn.relu(layer_instance_norm(x, scope="layer_ins_norm_" + str(i)))
            channel = channel // 2
        x = conv(x, channels=3, kernel=7, stride=1, pad=3, pad_type="reflect", scope="G_logit")
        return tf.tanh(x), cam_logit


def save_and_translate(
    prefix: Path, *, ch: int, n_res: int, img_size: int, light: bool, smoothing: bool,
    images: dict[str, np.ndarray], seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Build both generators (their scopes), save with TensorFlow's Saver, and translate `images`
    ((S, S, 3) in [-1, 1]) in both directions: {"a2b"|"b2a": {name: (S, S, 3)}}."""
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        x = v1.placeholder(tf.float32, [1, img_size, img_size, 3], name="test_domain")
        a2b, _ = generator(x, ch, n_res, light, smoothing, scope="generator_B")  # their generate_a2b
        b2a, _ = generator(x, ch, n_res, light, smoothing, scope="generator_A")
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            prefix.parent.mkdir(parents=True, exist_ok=True)
            saver.save(sess, str(prefix), write_meta_graph=False)
            out: dict[str, dict[str, np.ndarray]] = {"a2b": {}, "b2a": {}}
            for name, image in images.items():
                ab, ba = sess.run([a2b, b2a], {x: image[None].astype(np.float32)})
                out["a2b"][name], out["b2a"][name] = ab[0], ba[0]
    return out
