// Translation unit B of the ODR check (see odr_body.hpp).
#define LIGHTLOOP_ODR_FUNCTION lightloop_odr_train_b
#include "odr_body.hpp"
