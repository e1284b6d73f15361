// test_network: tests to come.
#include <gtest/gtest.h>
