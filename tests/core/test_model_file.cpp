// test_model_file: tests to come.
#include <gtest/gtest.h>
