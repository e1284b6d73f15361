// test_threads.cpp: a workspace's threads. The pool must run every row once, each thread its own
// contiguous share; mlff_compute must give the same energies and forces, to the bit, on any number
// of threads (exact and tabulated filters, replicas, a periodic box, many chunks of pairs); bad
// thread counts are errors naming the argument.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "painn_network.h"
#include "thread_pool.h"
}
#include "test_support.h"

namespace {

// ---------------------------------------------------------------------------------------
// The pool

struct Visits {
    std::vector<std::atomic<int>> count;   // (rows) times each row was run
    std::vector<std::atomic<int>> thread;  // (rows) the thread that ran it
    std::atomic<int> calls{0};
    explicit Visits(std::size_t rows) : count(rows), thread(rows) {}
};

void visit(void *context, std::size_t begin, std::size_t end, int thread) {
    auto *visits = static_cast<Visits *>(context);
    visits->calls++;
    for (std::size_t r = begin; r < end; r++) {
        visits->count[r]++;
        visits->thread[r] = thread;
    }
}

TEST(ThreadPool, RunsEveryRowOnceInContiguousSharesOfEnoughRows) {
    for (int size : {1, 2, 3, 7}) {
        mlff_thread_pool *pool = nullptr;
        mlff_error error{};
        ASSERT_EQ(mlff_thread_pool_create(size, &pool, &error), MLFF_OK) << error.message;
        EXPECT_EQ(mlff_thread_pool_size(pool), size);
        for (std::size_t rows : {0u, 1u, 5u, 16u, 17u, 100u, 1001u}) {
            for (std::size_t min_rows : {1u, 8u}) {
                SCOPED_TRACE(std::to_string(size) + " threads, " + std::to_string(rows) + " rows, at least " +
                             std::to_string(min_rows) + " a share");
                for (int loop = 0; loop < 3; loop++) { // the pool's threads take each loop once
                    Visits visits(rows);
                    mlff_thread_pool_for(pool, rows, min_rows, visit, &visits);
                    const std::size_t shares = std::min<std::size_t>(size, std::max<std::size_t>(rows / min_rows, 1));
                    EXPECT_EQ(visits.calls, rows == 0 ? 0 : static_cast<int>(shares));
                    for (std::size_t r = 0; r < rows; r++) {
                        ASSERT_EQ(visits.count[r], 1) << "row " << r;
                        // share k is rows [rows k / shares, rows (k + 1) / shares)
                        std::size_t k = 0; // the share holding row r
                        while (rows * (k + 1) / shares <= r) k++;
                        ASSERT_EQ(visits.thread[r], static_cast<int>(k)) << "row " << r;
                    }
                }
            }
        }
        mlff_thread_pool_free(pool);
    }
}

// Between loops the threads spin a while, then sleep (or sleep at once when told to rest): a loop
// finds them either way, and a share that outlasts the caller's spin (the caller then sleeps until
// it ends) is waited for.
TEST(ThreadPool, RunsLoopsAfterItsThreadsSleptAndWaitsForSlowShares) {
    mlff_thread_pool *pool = nullptr;
    mlff_error error{};
    ASSERT_EQ(mlff_thread_pool_create(3, &pool, &error), MLFF_OK) << error.message;
    for (int loop = 0; loop < 4; loop++) {
        SCOPED_TRACE("loop " + std::to_string(loop));
        Visits visits(30);
        mlff_thread_pool_for(pool, 30, 1, visit, &visits);
        for (std::size_t r = 0; r < 30; r++) ASSERT_EQ(visits.count[r], 1) << "row " << r;
        if (loop % 2 == 0)
            std::this_thread::sleep_for(std::chrono::milliseconds(5)); // past the spin: the threads sleep
        else
            mlff_thread_pool_rest(pool); // they sleep at once
    }
    std::atomic<int> finished{0};
    auto slow = [](void *context, std::size_t, std::size_t, int thread) {
        if (thread == 2) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        static_cast<std::atomic<int> *>(context)->fetch_add(1);
    };
    mlff_thread_pool_for(pool, 3, 1, slow, &finished);
    EXPECT_EQ(finished, 3) << "the loop returned before its slow share ended";
    mlff_thread_pool_free(pool);
}

TEST(ThreadPool, NoPoolIsTheCallersThread) {
    EXPECT_EQ(mlff_thread_pool_size(nullptr), 1);
    Visits visits(40);
    mlff_thread_pool_for(nullptr, 40, 1, visit, &visits);
    EXPECT_EQ(visits.calls, 1);
    for (std::size_t r = 0; r < 40; r++) EXPECT_EQ(visits.thread[r], 0);
    mlff_thread_pool_free(nullptr);
}

// ---------------------------------------------------------------------------------------
// mlff_compute on threads

struct Result {
    std::vector<double> replica_energies, atom_energies, forces;
};

Result compute(const mlff_model *model, const mlff_filter_table *table, const mlff_test::Structure &structure,
               int threads) {
    Result out;
    const std::size_t N = structure.atomic_numbers.size();
    out.replica_energies.assign(static_cast<std::size_t>(structure.num_replicas), 0.0);
    out.atom_energies.assign(N, 0.0);
    out.forces.assign(3 * N, 0.0);
    mlff_test::WorkspacePtr workspace(mlff_workspace_create());
    mlff_error error{};
    EXPECT_EQ(mlff_workspace_set_num_threads(workspace.get(), threads, &error), MLFF_OK) << error.message;
    EXPECT_EQ(mlff_workspace_num_threads(workspace.get()), threads);
    const mlff_structure view = structure.view();
    mlff_result result = {out.replica_energies.data(), out.atom_energies.data(), out.forces.data()};
    for (int call = 0; call < 2; call++) // the second call reuses the grown buffers and the threads
        EXPECT_EQ(mlff_compute_tabulated(model, table, workspace.get(), &view, &result, &error), MLFF_OK)
                << error.message;
    return out;
}

bool same_bits(const std::vector<double> &a, const std::vector<double> &b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

// 300 atoms, 2 replicas, in a periodic box: thousands of pairs, so several chunks of pairs (256 a
// thread) on any number of threads, the last one short.
mlff_test::Structure crowded_structure() {
    mlff_test::Structure s = mlff_test::random_structure(300, 9, 16.0, 0.9, 71);
    s.num_replicas = 2;
    for (std::size_t i = 0; i < s.atomic_numbers.size(); i++) s.replicas.push_back(i % 3 == 0 ? 1 : 0);
    s.box = {16, 0, 0, 0, 16, 0, 0, 0, 16};
    return s;
}

/** The bits of 2, 3 and 7 threads against one, for a model of H channels, L blocks, exact or tabulated. */
void expect_the_same_bits_on_any_number_of_threads(int H, int L, bool tabulated) {
    const mlff_test::ModelAndTable m = mlff_test::random_model_and_table_or_fail(H, L, tabulated);
    ASSERT_TRUE(m.model);
    const mlff_test::Structure structure = crowded_structure();
    const Result one = compute(m.model.get(), m.table.get(), structure, 1);
    ASSERT_NE(one.forces[0], 0.0);
    for (int threads : {2, 3, 7}) {
        SCOPED_TRACE(std::to_string(threads) + " threads");
        const Result many = compute(m.model.get(), m.table.get(), structure, threads);
        EXPECT_TRUE(same_bits(one.replica_energies, many.replica_energies));
        EXPECT_TRUE(same_bits(one.atom_energies, many.atom_energies));
        EXPECT_TRUE(same_bits(one.forces, many.forces));
    }
}

TEST(ComputeOnThreads, GivesTheSameBitsOnAnyNumberOfThreadsExactFilters) {
    // H = 64: a chunk's 256 pairs a thread make shares of the filters (smaller models stay on
    // fewer threads), the edges of 3 threads' chunks shares of the messages (and the pairs of 7
    // threads' chunks shares of their backward's own part), and the 300 atoms shares of the updates.
    const mlff_painn_share_rows rows = mlff_painn_min_rows_a_share(64, 7);
    ASSERT_LE(2 * rows.filter, 256u);
    ASSERT_LE(2 * rows.edges, 2 * 3 * 256u);
    ASSERT_LE(2 * rows.message_pairs, 7 * 256u);
    ASSERT_LE(2 * rows.update, 300u);
    expect_the_same_bits_on_any_number_of_threads(64, 3, false);
}

TEST(ComputeOnThreads, GivesTheSameBitsOnAnyNumberOfThreadsTabulatedFilters) {
    // H = 256: the table's rows, cheap, and the messages take shares too.
    const mlff_painn_share_rows rows = mlff_painn_min_rows_a_share(256, 7);
    ASSERT_LE(2 * rows.table, 2 * 256u);
    ASSERT_LE(2 * rows.edges, 2 * 2 * 256u);
    ASSERT_LE(2 * rows.update, 300u);
    expect_the_same_bits_on_any_number_of_threads(256, 2, true);
}

TEST(ComputeOnThreads, TheNumberOfThreadsCanChangeAndGoBackToOne) {
    auto model = mlff_test::random_model_or_fail();
    ASSERT_TRUE(model);
    mlff_test::WorkspacePtr workspace(mlff_workspace_create());
    mlff_error error{};
    for (int threads : {4, 2, 1, 3}) {
        ASSERT_EQ(mlff_workspace_set_num_threads(workspace.get(), threads, &error), MLFF_OK) << error.message;
        EXPECT_EQ(mlff_workspace_num_threads(workspace.get()), threads);
    }
    EXPECT_EQ(mlff_workspace_num_threads(nullptr), 1);
}

TEST(ComputeOnThreads, BadThreadCountsNameTheArgument) {
    mlff_test::WorkspacePtr workspace(mlff_workspace_create());
    ASSERT_EQ(mlff_workspace_set_num_threads(workspace.get(), 3, nullptr), MLFF_OK);
    for (int threads : {0, -2}) {
        mlff_error error{};
        EXPECT_EQ(mlff_workspace_set_num_threads(workspace.get(), threads, &error), MLFF_ERROR_INVALID_ARGUMENT);
        EXPECT_NE(std::string(error.message).find("num_threads is " + std::to_string(threads)), std::string::npos)
                << error.message;
        EXPECT_EQ(mlff_workspace_num_threads(workspace.get()), 3) << "a bad count leaves the threads as they were";
    }
    mlff_error error{};
    EXPECT_EQ(mlff_workspace_set_num_threads(nullptr, 2, &error), MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(error.message).find("workspace is NULL"), std::string::npos) << error.message;
    mlff_thread_pool *pool = nullptr;
    EXPECT_EQ(mlff_thread_pool_create(0, &pool, &error), MLFF_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(pool, nullptr);
}

} // namespace
