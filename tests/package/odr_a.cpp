// Translation unit A of the ODR check (see odr_body.hpp).
#define LIGHTLOOP_ODR_FUNCTION lightloop_odr_train_a
#include "odr_body.hpp"
