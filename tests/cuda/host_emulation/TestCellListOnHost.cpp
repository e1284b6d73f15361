// cell_list.cu run on the CPU (CudaOnHost.h): one evaluation's neighbour search, 54 ML atoms in 7
// replicas that overlap in space, chosen from a System of more particles, listed in no spatial
// order and read from a posq that OpenMM has reordered. After the launches:
//   - the ML atoms are renumbered within each replica's range, each keeping its particle, Z and
//     position (binned in the numbering before);
//   - in the cells' order: along the new numbering the cell never decreases, and within a cell the
//     particle index increases;
//   - each atom's list is exactly the atoms of its replica within the cutoff, ascending;
//   - the numbering depends on the positions alone: another numbering before gives the same one.
// Built twice: without a box, the atoms spread over 70 Å so that cells a block apart share a bucket
// (128 a replica, blocks of 4 x 4 x 8 cells), and periodic (MLFF_PERIODIC), with grids as setBox
// chooses them: 4 x 4 x 8 cells, and 4 x 1 x 5 (an axis too short for 3 cells is one; 5 slices,
// the fewest with a reach of 2).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <set>

#include "KernelsOnHost.h"

namespace {

constexpr int NumParticles = 80; // the System's; MLFF_NUM_ATOMS of them are ML atoms
constexpr int Capacity = MLFF_NUM_ATOMS;

struct Box {
    real4 a, b, c, inverse;
    int4 grid;
};

/** The ML atoms as the host numbers them at first: by replica, 54 of the System's particles drawn at random. */
struct Atoms {
    std::vector<int> particle, z, replica, replicaStart;
    std::vector<int> originParticle; // a replica's (the host's replicaOriginParticle): its first particle here
};

Atoms firstNumbering(std::mt19937& rng) {
    std::vector<int> particles(NumParticles);
    std::iota(particles.begin(), particles.end(), 0);
    std::shuffle(particles.begin(), particles.end(), rng);
    Atoms atoms;
    atoms.replicaStart = {0};
    for (int r = 0; r < MLFF_NUM_REPLICAS; r++) {
        const int size = MLFF_NUM_ATOMS / MLFF_NUM_REPLICAS + (r < MLFF_NUM_ATOMS % MLFF_NUM_REPLICAS ? 1 : 0);
        for (int k = 0; k < size; k++) {
            atoms.particle.push_back(particles[atoms.particle.size()]);
            atoms.z.push_back(1 + (int) (rng() % 9));
            atoms.replica.push_back(r);
        }
        atoms.originParticle.push_back(atoms.particle[atoms.replicaStart.back()]);
        atoms.replicaStart.push_back((int) atoms.particle.size());
    }
    return atoms;
}

/** The same atoms with each replica's range shuffled. */
Atoms shuffledWithinReplicas(const Atoms& atoms, std::mt19937& rng) {
    Atoms shuffled = atoms;
    for (int r = 0; r < MLFF_NUM_REPLICAS; r++) {
        std::vector<int> order(atoms.replicaStart[r + 1] - atoms.replicaStart[r]);
        std::iota(order.begin(), order.end(), atoms.replicaStart[r]);
        std::shuffle(order.begin(), order.end(), rng);
        for (size_t k = 0; k < order.size(); k++) {
            shuffled.particle[atoms.replicaStart[r] + k] = atoms.particle[order[k]];
            shuffled.z[atoms.replicaStart[r] + k] = atoms.z[order[k]];
        }
    }
    return shuffled;
}

/** What an evaluation's neighbour search leaves: the new numbering, positions and lists. */
struct Search {
    std::vector<int> particle, z, count, list;
    std::vector<real4> pos;
};

Search findNeighbors(const Atoms& atoms, const std::vector<real4>& posq, const std::vector<int>& sortedIndex,
                     const Box& box) {
    const int n = MLFF_NUM_ATOMS;
    Search s;
    s.particle = atoms.particle;
    s.z = atoms.z;
    s.pos.resize(n);
    s.count.assign(n, -1);
    s.list.assign((size_t) n * Capacity, -1);
    std::vector<real4> binned(n);
    std::vector<int> cellOf(n), cellCount(MLFF_NUM_CELLS, 0), cellStart(MLFF_NUM_CELLS), cellAtoms(n),
        orderParticle(n, -1), orderZ(n, -1), scratch((size_t) n * Capacity);
    const int cells = MLFF_NUM_CELLS;
    cudaOnHostLaunch(1, 64, [&] {
        mlffAssignCells(posq.data(), sortedIndex.data(), s.particle.data(), atoms.replica.data(),
                        atoms.originParticle.data(), box.a, box.b, box.c, box.inverse, box.grid, binned.data(),
                        cellOf.data(), cellCount.data());
    });
    cudaOnHostLaunch(1, MLFF_SCAN_THREADS, [&] { mlffScanCells(cellCount.data(), cellStart.data(), cells); });
    cudaOnHostLaunch(1, 64, [&] { mlffFillCells(cellOf.data(), cellStart.data(), cellCount.data(), cellAtoms.data()); });
    cudaOnHostLaunch(1, 64, [&] {
        mlffNumberAtomsByCell(cellOf.data(), cellStart.data(), cellCount.data(), cellAtoms.data(), s.particle.data(),
                              s.z.data(), binned.data(), orderParticle.data(), orderZ.data(), s.pos.data());
    });
    cudaOnHostLaunch((n * 32 + 127) / 128, 128, [&] {
        mlffFindNeighborsInCells(s.pos.data(), atoms.replica.data(), cellStart.data(), cellCount.data(),
                                 orderParticle.data(), orderZ.data(), posq.data(), sortedIndex.data(),
                                 atoms.originParticle.data(), s.particle.data(), s.z.data(), box.a, box.b, box.c,
                                 box.inverse, box.grid, s.count.data(), scratch.data(), s.list.data(), Capacity);
    });
    return s;
}

void expectSameNumbering(const Search& a, const Search& b) {
    EXPECT_EQ(a.particle, b.particle);
    EXPECT_EQ(a.z, b.z);
    EXPECT_EQ(a.count, b.count);
    EXPECT_EQ(a.list, b.list);
}

/** How many cells apart along each axis the two atoms of an edge lie at most (periodic: the nearer way round). */
int4 widestEdge(const Search& s, const Box& box) {
    int4 widest = make_int4(0, 0, 0, 0);
    const auto apart = [](int a, int b, [[maybe_unused]] int cells) {
#ifdef MLFF_PERIODIC
        return std::min(std::abs(a - b), cells - std::abs(a - b));
#else
        return std::abs(a - b);
#endif
    };
    for (int i = 0; i < MLFF_NUM_ATOMS; i++) {
        const int4 a = mlffCellCoordinates(s.pos[i], box.a, box.b, box.c, box.inverse, box.grid);
        for (int k = 0; k < s.count[i]; k++) {
            const int4 b = mlffCellCoordinates(s.pos[s.list[(size_t) i * Capacity + k]], box.a, box.b, box.c,
                                               box.inverse, box.grid);
            widest = make_int4(std::max(widest.x, apart(a.x, b.x, box.grid.x)), std::max(widest.y, apart(a.y, b.y, box.grid.y)),
                               std::max(widest.z, apart(a.z, b.z, box.grid.z)), 0);
        }
    }
    return widest;
}

void checkSearch(const Atoms& atoms, const std::vector<real4>& posq, const std::vector<int>& sortedIndex,
                 const Box& box, const Search& s) {
    std::vector<int> zOf(NumParticles, -1), replicaOf(NumParticles, -1);
    for (int i = 0; i < MLFF_NUM_ATOMS; i++) {
        zOf[atoms.particle[i]] = atoms.z[i];
        replicaOf[atoms.particle[i]] = atoms.replica[i];
    }
    std::set<int> seen;
    int previousCell = -1, previousParticle = -1;
    for (int i = 0; i < MLFF_NUM_ATOMS; i++) {
        SCOPED_TRACE("ML atom " + std::to_string(i));
        const int p = s.particle[i];
        ASSERT_TRUE(p >= 0 && p < NumParticles && zOf[p] >= 0 && seen.insert(p).second) << "particle " << p;
        EXPECT_EQ(replicaOf[p], atoms.replica[i]); // each replica keeps its range
        EXPECT_EQ(s.z[i], zOf[p]);
        const real4 r = mlffLoadPosition(posq.data(), sortedIndex.data(), p);
        EXPECT_TRUE(s.pos[i].x == r.x && s.pos[i].y == r.y && s.pos[i].z == r.z);
        const int4 origin = mlffReplicaOriginCell(posq.data(), sortedIndex.data(), atoms.originParticle.data(),
                                                  atoms.replica[i], box.a, box.b, box.c, box.inverse, box.grid);
        const int cell = mlffCellIndex(mlffCellCoordinates(r, box.a, box.b, box.c, box.inverse, box.grid),
                                       atoms.replica[i], box.grid, origin);
        EXPECT_TRUE(cell > previousCell || (cell == previousCell && p > previousParticle))
            << "cell " << cell << " and particle " << p << " after cell " << previousCell << " and particle "
            << previousParticle;
        previousCell = cell;
        previousParticle = p;

        std::vector<int> expected;
        for (int j = atoms.replicaStart[atoms.replica[i]]; j < atoms.replicaStart[atoms.replica[i] + 1]; j++) {
            real ux, uy, uz;
            mlffPairDelta(s.pos[i], s.pos[j], box.a, box.b, box.c, box.inverse, &ux, &uy, &uz);
            if (j != i && mlffIsEdge(ux, uy, uz))
                expected.push_back(j);
        }
        ASSERT_EQ(s.count[i], (int) expected.size());
        const std::vector<int> listed(s.list.begin() + (size_t) i * Capacity,
                                      s.list.begin() + (size_t) i * Capacity + s.count[i]);
        EXPECT_EQ(listed, expected);
    }
}

/** The System's positions (nm, as posq holds them) in an order of OpenMM's, and where each particle went. */
void placeInPosq(const std::vector<real4>& angstrom, std::mt19937& rng, std::vector<real4>& posq,
                 std::vector<int>& sortedIndex) {
    sortedIndex.resize(NumParticles);
    std::iota(sortedIndex.begin(), sortedIndex.end(), 0);
    std::shuffle(sortedIndex.begin(), sortedIndex.end(), rng);
    posq.resize(NumParticles);
    for (int p = 0; p < NumParticles; p++)
        posq[sortedIndex[p]] = make_real4(angstrom[p].x / 10, angstrom[p].y / 10, angstrom[p].z / 10, 0);
}

/** Checks one evaluation's search from two numberings before; returns widestEdge of its lists. */
int4 checkEvaluation(const std::vector<real4>& angstrom, const Box& box, std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<real4> posq;
    std::vector<int> sortedIndex;
    placeInPosq(angstrom, rng, posq, sortedIndex);
    const Atoms atoms = firstNumbering(rng);
    const Search first = findNeighbors(atoms, posq, sortedIndex, box);
    checkSearch(atoms, posq, sortedIndex, box, first);
    int edges = 0;
    for (int count : first.count)
        edges += count;
    EXPECT_GT(edges, MLFF_NUM_ATOMS) << "too few edges to test";

    SCOPED_TRACE("from another numbering");
    expectSameNumbering(findNeighbors(shuffledWithinReplicas(atoms, rng), posq, sortedIndex, box), first);
    Atoms renumbered = atoms;
    renumbered.particle = first.particle;
    renumbered.z = first.z;
    expectSameNumbering(findNeighbors(renumbered, posq, sortedIndex, box), first);
    return widestEdge(first, box);
}

#ifndef MLFF_PERIODIC

TEST(CellListOnHost, NumbersAtomsByCellAndFindsTheirNeighbors) {
    // Half the particles in a 4 Å cube, the rest over 70 Å (negative coordinates too): a bucket then
    // holds atoms of cells a block (4 x 4 x 8 cells, 20 Å each way) apart.
    std::mt19937 rng(5);
    std::uniform_real_distribution<double> near(-1.0, 3.0), far(-30.0, 40.0);
    std::vector<real4> angstrom(NumParticles);
    for (int p = 0; p < NumParticles; p++)
        angstrom[p] = p % 2 == 0 ? make_real4(near(rng), near(rng), near(rng), 0) : make_real4(far(rng), far(rng), far(rng), 0);
    const Box open{};
    std::set<std::pair<int, int>> cellsOfBucket; // (bucket, cell) of the particles, as replica 0's about (0, 0, 0)
    for (int p = 0; p < NumParticles; p++) {
        const int4 c = mlffCellCoordinates(angstrom[p], open.a, open.b, open.c, open.inverse, open.grid);
        cellsOfBucket.insert({mlffCellIndex(c, 0, open.grid, make_int4(0, 0, 0, 0)), c.x + 1000 * (c.y + 1000 * c.z)});
    }
    std::set<int> buckets;
    for (const auto& [bucket, x] : cellsOfBucket)
        buckets.insert(bucket);
    ASSERT_LT(buckets.size(), cellsOfBucket.size()) << "no bucket holds two cells: the test would not reach that case";
    const int4 widest = checkEvaluation(angstrom, open, 1);
    EXPECT_TRUE(widest.x == 1 && widest.y == 1 && widest.z == MLFF_CELL_SLICES)
        << "no edge reaches as far as the search does (" << widest.x << ", " << widest.y << ", " << widest.z << ")";
}

#else

TEST(CellListOnHost, NumbersAtomsByCellAndFindsTheirNeighborsInTheBox) {
    // setBox's grids: floor(height * reach / 5.0005 Å) cells an axis (reach 1, 1, 2), or one cell
    // where fewer than 2 reach + 1.
    const struct {
        real4 sides;
        int4 grid;
    } boxes[] = {{make_real4(21, 21, 21, 0), make_int4(4, 4, 8, 0)}, {make_real4(21, 11, 13, 0), make_int4(4, 1, 5, 0)}};
    for (const auto& [sides, grid] : boxes) {
        SCOPED_TRACE("box sides " + std::to_string(sides.x) + ", " + std::to_string(sides.y) + ", " + std::to_string(sides.z));
        Box box{make_real4(sides.x, 0, 0, 0), make_real4(0, sides.y, 0, 0), make_real4(0, 0, sides.z, 0),
                make_real4(1 / sides.x, 1 / sides.y, 1 / sides.z, 0), grid};
        // Three particles in four within 5 Å of the box's corner (edges across its faces, and
        // enough of them to reach as far as the search does), the rest anywhere in it, each in an
        // image of the box (positions are not wrapped before the search).
        std::mt19937 rng(7);
        std::uniform_real_distribution<double> corner(-5.0, 5.0), inside(0.0, 1.0);
        std::uniform_int_distribution<int> image(-1, 1);
        std::vector<real4> angstrom(NumParticles);
        for (int p = 0; p < NumParticles; p++) {
            const real4 r = p % 4 != 0 ? make_real4(corner(rng), corner(rng), corner(rng), 0)
                                       : make_real4(sides.x * inside(rng), sides.y * inside(rng), sides.z * inside(rng), 0);
            angstrom[p] = make_real4(r.x + sides.x * image(rng), r.y + sides.y * image(rng), r.z + sides.z * image(rng), 0);
        }
        const int4 widest = checkEvaluation(angstrom, box, 1);
        const int4 reach = mlffCellReach(grid);
        EXPECT_TRUE(widest.x == reach.x && widest.y == reach.y && widest.z == reach.z)
            << "no edge reaches as far as the search does (" << widest.x << ", " << widest.y << ", " << widest.z << ")";
    }
}

#endif

} // namespace
