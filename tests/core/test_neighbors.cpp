// test_neighbors: tests to come.
#include <gtest/gtest.h>
