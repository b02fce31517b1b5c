#pragma once
// The simulated optical processing unit: encoder, scattering media,
// reference, readouts, camera and the device that assembles them.

#include "lightloop/projection/optical/camera.hpp"
#include "lightloop/projection/optical/device.hpp"
#include "lightloop/projection/optical/encoder.hpp"
#include "lightloop/projection/optical/frame_batch.hpp"
#include "lightloop/projection/optical/matrix_free_medium.hpp"
#include "lightloop/projection/optical/medium.hpp"
#include "lightloop/projection/optical/readout.hpp"
#include "lightloop/projection/optical/reference.hpp"
#include "lightloop/projection/optical/settings.hpp"
#include "lightloop/projection/optical/structured_medium.hpp"
#include "lightloop/projection/optical/time_model.hpp"
#include "lightloop/projection/optical/transmission_matrix.hpp"
