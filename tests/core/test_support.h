// test_support.h: helpers shared by the core's tests.
#pragma once
