#pragma once
// The simulated optical processing unit: encoder, transmission matrix,
// reference, readouts, camera and the device that assembles them.

#include "lightloop/projection/optical/camera.hpp"
#include "lightloop/projection/optical/device.hpp"
#include "lightloop/projection/optical/encoder.hpp"
#include "lightloop/projection/optical/readout.hpp"
#include "lightloop/projection/optical/reference.hpp"
#include "lightloop/projection/optical/transmission_matrix.hpp"
