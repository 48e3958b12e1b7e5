"""tfmedseg.models.backbones: classifier encoders (``resnet``, ``vgg``, ``os8``, ...).

Names a config needs without TensorFlow live here; the builders import Keras.
"""

#: The seed-003 classifier backbones at output stride 8 (:func:`tfmedseg.models.backbones.os8.build_os8_backbone`).
OS8_BACKBONES = ("resnet152", "resnext101_32x8d", "densenet201", "inception_v3")
