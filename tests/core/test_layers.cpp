// test_layers: tests to come.
#include <gtest/gtest.h>
