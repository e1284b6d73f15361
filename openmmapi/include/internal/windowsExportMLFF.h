#ifndef OPENMM_WINDOW_EXPORT_MLFF_H_
#define OPENMM_WINDOW_EXPORT_MLFF_H_

// Symbol visibility of the plugin's API: exported on Windows DLLs, default elsewhere.
#if defined(_MSC_VER)
    #if defined(OPENMM_MLFF_BUILDING_SHARED_LIBRARY)
        #define OPENMM_EXPORT_MLFF __declspec(dllexport)
    #else
        #define OPENMM_EXPORT_MLFF __declspec(dllimport)
    #endif
#else
    #define OPENMM_EXPORT_MLFF
#endif

#endif // OPENMM_WINDOW_EXPORT_MLFF_H_
