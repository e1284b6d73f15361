// test_golden: tests to come.
#include <gtest/gtest.h>
